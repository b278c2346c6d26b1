# ZTF alerts from data.source -> the data contract under results/data/ztf/.


rule ingest_ztf:
    input:
        ingest_inputs,
    output:
        **dataset_files("ztf"),
    log:
        "logs/data/ingest_ztf.log",
    conda:
        ENV
    params:
        data=data_params(),
        splits=config["splits"],
    script:
        "../scripts/ingest_ztf.py"
