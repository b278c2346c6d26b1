# Our own pre-training regimens (regimens.<name>.pretrain): a SYNTHETIC galaxy corpus (unless the
# regimen names a corpus folder), then one pre-trained encoder per timm architecture, written to
# resources/weights/{regimen}/{arch}/ where fine-tuning reads it like fetched weights.


rule galaxy_corpus:
    output:
        directory("resources/corpora/{regimen}"),
    wildcard_constraints:
        regimen=regimens_pattern(published=False),
    params:
        corpus=lambda wildcards: config["regimens"][wildcards.regimen]["pretrain"]["corpus"],
    log:
        "logs/pretrain/{regimen}/corpus.log",
    conda:
        ENV
    script:
        "../scripts/galaxy_corpus.py"


rule pretrain:
    input:
        corpus=pretrain_corpus,
    output:
        directory("resources/weights/{regimen}/{arch}"),
    wildcard_constraints:
        regimen=regimens_pattern(published=False),
    params:
        arch=lambda wildcards: config["archs"][wildcards.arch],
        pretrain=lambda wildcards: config["regimens"][wildcards.regimen]["pretrain"],
    threads: lambda wildcards: config["regimens"][wildcards.regimen]["pretrain"]["threads"]
    resources:
        gpu=config["resources"]["pretrain"]["gpu"],
        runtime=config["resources"]["pretrain"]["runtime"],
        mem_mb=config["resources"]["pretrain"]["mem_mb"],
    benchmark:
        "results/benchmarks/pretrain/{regimen}/{arch}.tsv"
    log:
        "logs/pretrain/{regimen}/{arch}.log",
    conda:
        ENV
    script:
        "../scripts/pretrain.py"
