# Per-run metrics aggregated over seeds.


rule aggregate_roc_auc:
    input:
        metrics=grid_files("metrics.json", "image", FIGURE2_DATASETS),
        predictions=grid_files("predictions.parquet", "image", FIGURE2_DATASETS),
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


# Figure 5's table: the image runs on a new survey's dataset, every regimen (transfer from ZTF among them).
rule aggregate_transfer:
    input:
        metrics=grid_files("metrics.json", "image", TRANSFER_DATASETS),
        predictions=grid_files("predictions.parquet", "image", TRANSFER_DATASETS),
    output:
        LAYOUT.table("transfer_roc_auc.csv"),
    log:
        "logs/evaluate/aggregate_transfer.log",
    conda:
        ENV
    params:
        bootstrap=config["bootstrap"],
    script:
        "../scripts/aggregate.py"
