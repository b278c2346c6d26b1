# Optuna sweeps (sweep.trials > 0, or archs.<name>.sweep.trials): per configuration, sweep.workers
# jobs share one study through its storage (a journal file here, or a database), then one job
# writes best.yaml, trials.csv and the plot; the seed runs train with best.yaml's hyperparameters.
# The journal is not declared as an output: Snakemake would delete it when a worker fails, and the
# sweep would start over instead of adding the missing trials.


rule sweep_worker:
    input:
        unpack(lambda wildcards: sweep_job(config, wildcards).inputs()),
    output:
        LAYOUT.sweep_file("worker{worker}.json"),
    log:
        "logs/sweeps/{dataset}/{modality}/{arch}/{regimen}/f{fraction}/worker{worker}.log",
    conda:
        ENV
    threads: lambda wildcards: training_params(config, wildcards.arch)["threads"]
    resources:
        gpu=config["resources"]["train"]["gpu"],
        runtime=config["resources"]["train"]["runtime"],
        mem_mb=config["resources"]["train"]["mem_mb"],
    params:
        job=lambda wildcards: sweep_job(config, wildcards).params(),
        sweep=lambda wildcards: sweep_params(config, wildcards.arch, masked=True, modality=wildcards.modality),
        study=study_of,
    script:
        "../scripts/sweep_worker.py"


rule sweep_finalize:
    input:
        sweep_workers,
    output:
        best=LAYOUT.sweep_file("best.yaml"),
        trials=LAYOUT.sweep_file("trials.csv"),
        plot=report(
            LAYOUT.sweep_file("trials.png"),
            caption="../report/sweep.rst",
            category="Sweeps",
            subcategory="{dataset} {arch} {regimen} f{fraction}",
        ),
    log:
        "logs/sweeps/{dataset}/{modality}/{arch}/{regimen}/f{fraction}/finalize.log",
    conda:
        ENV
    params:
        job=lambda wildcards: sweep_job(config, wildcards).params(),
        sweep=lambda wildcards: sweep_params(config, wildcards.arch, masked=True, modality=wildcards.modality),
        study=study_of,
    script:
        "../scripts/sweep_finalize.py"


rule sweep_summary:
    input:
        swept_configurations(),
    output:
        LAYOUT.sweep_summary(),
    log:
        "logs/sweeps/summary.log",
    conda:
        ENV
    script:
        "../scripts/sweep_summary.py"
