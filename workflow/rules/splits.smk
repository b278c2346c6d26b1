# The rows one training run uses: a nested fraction of the train sources, val and test whole.


rule split:
    input:
        alerts="results/data/{dataset}/alerts.parquet",
    output:
        "results/splits/{dataset}/f{fraction}.parquet",
    params:
        splits=config["splits"],
        fraction=lambda wildcards: float(wildcards.fraction),
    log:
        "logs/splits/{dataset}/f{fraction}.log",
    conda:
        ENV
    script:
        "../scripts/split.py"
