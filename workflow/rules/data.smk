# ZTF alerts from data.source -> the data contract under results/data/ztf/; Rubin/LSST alerts from
# data.lsst.source -> results/data/lsst/ (grid.datasets lsst).


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


rule ingest_lsst:
    input:
        lsst_ingest_inputs,
    output:
        **dataset_files("lsst"),
    log:
        "logs/data/ingest_lsst.log",
    conda:
        ENV
    params:
        data=lsst_data_params(),
        splits=config["splits"],
    script:
        "../scripts/ingest_lsst.py"
