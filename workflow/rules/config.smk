# The configuration of the study as run: every default filled in, any storage password masked.


localrules:
    resolved_config,


rule resolved_config:
    output:
        LAYOUT.resolved_config(),
    log:
        "logs/config.log",
    conda:
        ENV
    params:
        config=masked_config(config),
    script:
        "../scripts/resolved_config.py"
