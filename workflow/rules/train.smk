# Pretrained weights (fetched once per regimen and architecture) and one training job per grid cell and
# seed, or per grid cell for all its seeds (grid.seeds_in_one_job).


# Fetch jobs need nothing and every training job waits for the data, so they run first; a weight
# that cannot be had stops the workflow before any training starts. Pre-trained regimens get their
# folder from the `pretrain` rule instead (workflow/rules/pretrain.smk).
rule fetch_weights:
    output:
        directory(LAYOUT.weights_dir()),
    log:
        "logs/weights/{regimen}/{arch}.log",
    wildcard_constraints:
        regimen=regimens_pattern("published"),
    priority: 100
    conda:
        ENV
    params:
        weight_id=lambda wildcards: weight_id(config, wildcards.regimen, wildcards.arch),
        weights=config["weights"],
    script:
        "../scripts/fetch_weights.py"


rule train:
    input:
        unpack(lambda wildcards: train_job(config, wildcards).inputs()),
    output:
        model=LAYOUT.run_file("model.pt"),
        history=LAYOUT.run_file("history.csv"),
        metrics=LAYOUT.run_file("metrics.json"),
        predictions=LAYOUT.run_file("predictions.parquet"),
    log:
        "logs/train/{dataset}/{modality}/{arch}/{regimen}/f{fraction}/s{seed}.log",
    benchmark:
        LAYOUT.job_benchmark("train", "{dataset}/{modality}/{arch}/{regimen}/f{fraction}/s{seed}")
    conda:
        ENV
    threads: lambda wildcards: training_params(config, wildcards.arch)["threads"]
    resources:
        gpu=config["resources"]["train"]["gpu"],
        runtime=config["resources"]["train"]["runtime"],
        mem_mb=config["resources"]["train"]["mem_mb"],
    params:
        job=lambda wildcards: train_job(config, wildcards).params(),
    script:
        "../scripts/train.py"


# All seeds of a cell in one job: the grid's seeds; any other seed (export.runs, say) still trains alone.
if config["grid"]["seeds_in_one_job"]:

    ruleorder: train_seeds > train

    rule train_seeds:
        input:
            unpack(lambda wildcards: train_job(config, wildcards).inputs()),
        output:
            grid_seed_files(RUN_FILES),
        log:
            "logs/train/{dataset}/{modality}/{arch}/{regimen}/f{fraction}/seeds.log",
        benchmark:
            LAYOUT.job_benchmark("train", "{dataset}/{modality}/{arch}/{regimen}/f{fraction}/seeds")
        conda:
            ENV
        threads: lambda wildcards: training_params(config, wildcards.arch)["threads"]
        resources:
            gpu=config["resources"]["train"]["gpu"],
            runtime=config["resources"]["train"]["runtime"] * len(config["grid"]["seeds"]),
            mem_mb=config["resources"]["train"]["mem_mb"],
        params:
            job=lambda wildcards: train_job(config, wildcards).params(),
            seeds=config["grid"]["seeds"],
        script:
            "../scripts/train_seeds.py"
