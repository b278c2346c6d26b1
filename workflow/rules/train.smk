# Pretrained weights (resolved once per regimen and architecture) and one training job per grid cell.


# Resolution jobs need nothing and every training job waits for the data, so they run first; a
# weight that cannot be had stops the workflow before any training starts.
rule resolve_weights:
    output:
        "results/weights/{regimen}/{arch}.json",
    priority: 100
    params:
        weight_id=lambda wildcards: weight_id(config, wildcards.regimen, wildcards.arch),
        weights=config["weights"],
    log:
        "logs/weights/{regimen}/{arch}.log",
    conda:
        ENV
    script:
        "../scripts/resolve_weights.py"


rule train:
    input:
        unpack(train_inputs),
    output:
        model="results/runs/{dataset}/{modality}/{arch}/{regimen}/f{fraction}/s{seed}/model.pt",
        history="results/runs/{dataset}/{modality}/{arch}/{regimen}/f{fraction}/s{seed}/history.csv",
        metrics="results/runs/{dataset}/{modality}/{arch}/{regimen}/f{fraction}/s{seed}/metrics.json",
        predictions="results/runs/{dataset}/{modality}/{arch}/{regimen}/f{fraction}/s{seed}/predictions.parquet",
    params:
        arch=lambda wildcards: config["archs"][wildcards.arch],
        training=lambda wildcards: training_params(config, wildcards.arch),
        run_info=run_info,
    threads: lambda wildcards: training_params(config, wildcards.arch)["threads"]
    resources:
        gpu=1,
    benchmark:
        "results/benchmarks/train/{dataset}/{modality}/{arch}/{regimen}/f{fraction}/s{seed}.tsv"
    log:
        "logs/train/{dataset}/{modality}/{arch}/{regimen}/f{fraction}/s{seed}.log",
    conda:
        ENV
    script:
        "../scripts/train.py"
