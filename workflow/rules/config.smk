# The configuration of the study as run: every default filled in, any storage password masked.


localrules:
    resolved_config,


rule resolved_config:
    output:
        "results/config.yaml",
    params:
        config=masked_config(config),
    log:
        "logs/config.log",
    conda:
        ENV
    script:
        "../scripts/resolved_config.py"
