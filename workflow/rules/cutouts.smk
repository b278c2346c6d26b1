# Legacy Survey grz images, one per source, paired with the ZTF alerts -> results/data/ls/.


rule ls_dataset:
    input:
        **dataset_files("ztf"),
    output:
        **dataset_files("ls"),
    log:
        "logs/data/ls_dataset.log",
    conda:
        ENV
    params:
        legacysurvey=config["legacysurvey"],
        data=data_params(),
        splits=config["splits"],
    script:
        "../scripts/ls_dataset.py"
