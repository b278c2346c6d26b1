# Our own pre-training regimens (regimens.<name>.pretrain): a SYNTHETIC galaxy corpus (unless the
# regimen names a corpus folder), then one pre-trained encoder per timm architecture, written to
# resources/weights/{regimen}/{arch}/ where fine-tuning reads it like fetched weights.


rule galaxy_corpus:
    output:
        directory(LAYOUT.corpus_dir()),
    log:
        "logs/pretrain/{regimen}/corpus.log",
    wildcard_constraints:
        regimen=regimens_pattern("pretrain"),
    conda:
        ENV
    params:
        corpus=lambda wildcards: config["regimens"][wildcards.regimen]["pretrain"]["corpus"],
    script:
        "../scripts/galaxy_corpus.py"


rule pretrain:
    input:
        corpus=pretrain_corpus,
    output:
        directory(LAYOUT.weights_dir()),
    log:
        "logs/pretrain/{regimen}/{arch}.log",
    benchmark:
        LAYOUT.job_benchmark("pretrain", "{regimen}/{arch}")
    wildcard_constraints:
        regimen=regimens_pattern("pretrain"),
    conda:
        ENV
    threads: lambda wildcards: config["regimens"][wildcards.regimen]["pretrain"]["threads"]
    resources:
        gpu=config["resources"]["pretrain"]["gpu"],
        runtime=config["resources"]["pretrain"]["runtime"],
        mem_mb=config["resources"]["pretrain"]["mem_mb"],
    params:
        arch=lambda wildcards: config["archs"][wildcards.arch],
        pretrain=lambda wildcards: config["regimens"][wildcards.regimen]["pretrain"],
    script:
        "../scripts/pretrain.py"


# Transfer regimens (regimens.<name>.transfer): the encoder of the best run (validation ROC AUC) of each timm
# architecture on another dataset of this study, e.g. ZTF's as the start of an LSST classifier.
rule transfer_weights:
    input:
        unpack(transfer_inputs),
    output:
        directory(LAYOUT.weights_dir()),
    log:
        "logs/weights/{regimen}/{arch}.log",
    wildcard_constraints:
        regimen=regimens_pattern("transfer"),
    conda:
        ENV
    params:
        weight_id=lambda wildcards: weight_id(config, wildcards.regimen, wildcards.arch),
    script:
        "../scripts/transfer_weights.py"
