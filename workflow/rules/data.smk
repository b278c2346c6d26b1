# ZTF alerts from data.source -> the data contract under results/data/ztf/.


rule ingest_ztf:
    output:
        **dataset_files("ztf"),
    params:
        data=config["data"],
        splits=config["splits"],
    log:
        "logs/data/ingest_ztf.log",
    conda:
        ENV
    script:
        "../scripts/ingest_ztf.py"
