# The rows one training run uses: a nested fraction of the train sources, val and test whole.


rule split:
    input:
        alerts=LAYOUT.dataset_file("alerts.parquet"),
    output:
        LAYOUT.split_file(),
    log:
        "logs/splits/{dataset}/f{fraction}.log",
    conda:
        ENV
    params:
        splits=config["splits"],
        fraction=lambda wildcards: float(wildcards.fraction),
    script:
        "../scripts/split.py"
