# Pretrained weights (fetched once per regimen and architecture) and one training job per grid cell.


# Fetch jobs need nothing and every training job waits for the data, so they run first; a weight
# that cannot be had stops the workflow before any training starts. Pre-trained regimens get their
# folder from the `pretrain` rule instead (workflow/rules/pretrain.smk).
rule fetch_weights:
    output:
        directory("resources/weights/{regimen}/{arch}"),
    wildcard_constraints:
        regimen=regimens_pattern(published=True),
    priority: 100
    params:
        weight_id=lambda wildcards: weight_id(config, wildcards.regimen, wildcards.arch),
        weights=config["weights"],
    log:
        "logs/weights/{regimen}/{arch}.log",
    conda:
        ENV
    script:
        "../scripts/fetch_weights.py"


rule train:
    input:
        unpack(seed_run_inputs),
    output:
        model="results/runs/{dataset}/{modality}/{arch}/{regimen}/f{fraction}/s{seed}/model.pt",
        history="results/runs/{dataset}/{modality}/{arch}/{regimen}/f{fraction}/s{seed}/history.csv",
        metrics="results/runs/{dataset}/{modality}/{arch}/{regimen}/f{fraction}/s{seed}/metrics.json",
        predictions="results/runs/{dataset}/{modality}/{arch}/{regimen}/f{fraction}/s{seed}/predictions.parquet",
    params:
        arch=lambda wildcards: model_spec(config, wildcards.arch, wildcards.modality, wildcards.regimen),
        training=lambda wildcards: training_params(config, wildcards.arch, wildcards.modality),
        run_info=run_info,
        weight_id=lambda wildcards: weight_id(config, wildcards.regimen, wildcards.arch),
    threads: lambda wildcards: training_params(config, wildcards.arch)["threads"]
    resources:
        gpu=config["resources"]["train"]["gpu"],
        runtime=config["resources"]["train"]["runtime"],
        mem_mb=config["resources"]["train"]["mem_mb"],
    benchmark:
        "results/benchmarks/train/{dataset}/{modality}/{arch}/{regimen}/f{fraction}/s{seed}.tsv"
    log:
        "logs/train/{dataset}/{modality}/{arch}/{regimen}/f{fraction}/s{seed}.log",
    conda:
        ENV
    script:
        "../scripts/train.py"
