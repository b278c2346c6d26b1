# Per-run metrics aggregated over seeds.


rule aggregate_roc_auc:
    input:
        metrics=grid_files("metrics.json", "image"),
        predictions=grid_files("predictions.parquet", "image"),
    output:
        LAYOUT.table("roc_auc.csv"),
    log:
        "logs/evaluate/aggregate_roc_auc.log",
    conda:
        ENV
    params:
        bootstrap=config["bootstrap"],
    script:
        "../scripts/aggregate.py"


rule aggregate_f1:
    input:
        unpack(policy_exclusions),
        metrics=grid_files("metrics.json", "multimodal"),
        predictions=grid_files("predictions.parquet", "multimodal"),
    output:
        table=LAYOUT.table("f1.csv"),
        peak_mag=LAYOUT.table("completeness_peak_mag.csv"),
    log:
        "logs/evaluate/aggregate_f1.log",
    conda:
        ENV
    params:
        bootstrap=config["bootstrap"],
    script:
        "../scripts/f1_table.py"
