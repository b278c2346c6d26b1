# Per-run metrics aggregated over seeds.


rule aggregate_roc_auc:
    input:
        metrics=grid_runs("metrics.json"),
    output:
        "results/tables/roc_auc.csv",
    log:
        "logs/evaluate/aggregate_roc_auc.log",
    conda:
        ENV
    script:
        "../scripts/aggregate.py"
