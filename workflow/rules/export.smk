# Models for brokers: ONNX with its contract inside, a model card and reference alerts
# (docs/deploying.md). The export checks onnxruntime against PyTorch on the run's test split;
# calibration and recommended thresholds come from the validation split only.


rule export:
    input:
        unpack(export_inputs),
    output:
        model=LAYOUT.model_file("model.onnx"),
        card=LAYOUT.model_file("model_card.md"),
        reference=LAYOUT.model_file("reference.parquet"),
        reliability=report(
            LAYOUT.model_file("reliability.png"),
            caption="../report/reliability.rst",
            category="Deployment",
        ),
    log:
        "logs/export/{dataset}/{modality}/{arch}/{regimen}/f{fraction}/s{seed}.log",
    conda:
        ENV
    params:
        export=EXPORT_SETTINGS,
    script:
        "../scripts/export.py"


rule export_best:
    input:
        **dataset_files("ztf"),
        metrics=grid_files("metrics.json", "multimodal"),
        models=grid_files("model.pt", "multimodal"),
        predictions=grid_files("predictions.parquet", "multimodal"),
        splits=multimodal_split_files(),
    output:
        model=LAYOUT.best_model_file("model.onnx"),
        card=LAYOUT.best_model_file("model_card.md"),
        reference=LAYOUT.best_model_file("reference.parquet"),
        reliability=report(
            LAYOUT.best_model_file("reliability.png"),
            caption="../report/reliability.rst",
            category="Deployment",
        ),
        run=LAYOUT.best_model_file("run.json"),
    log:
        "logs/export/best.log",
    conda:
        ENV
    params:
        export=EXPORT_SETTINGS,
    script:
        "../scripts/export_best.py"
