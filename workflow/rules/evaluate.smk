# Per-run metrics aggregated over seeds.


rule aggregate_roc_auc:
    input:
        metrics=grid_runs("metrics.json", "image"),
    output:
        "results/tables/roc_auc.csv",
    log:
        "logs/evaluate/aggregate_roc_auc.log",
    conda:
        ENV
    script:
        "../scripts/aggregate.py"


rule aggregate_f1:
    input:
        unpack(policy_exclusions),
        metrics=grid_runs("metrics.json", "multimodal"),
        predictions=grid_runs("predictions.parquet", "multimodal"),
    output:
        table="results/tables/f1.csv",
        peak_mag="results/tables/completeness_peak_mag.csv",
    log:
        "logs/evaluate/aggregate_f1.log",
    conda:
        ENV
    script:
        "../scripts/f1_table.py"
