# Figure 4 and the outlier report: penultimate-layer embeddings of the test alerts of the runs the
# figure uses (embed.dataset, the grid's largest fraction, its first seed), their 2-D UMAP, the
# figure, and the Isolation-Forest outliers of the MaxViT runs as a CSV and a page of cards.
from alertvision.study.embedplan import embed_inputs, embed_plan, outlier_inputs

EMBED_PLAN = embed_plan(config)


rule embed:
    input:
        unpack(lambda wildcards: embed_inputs(config, wildcards.dataset, wildcards.arch, wildcards.regimen)),
    output:
        LAYOUT.embeddings_file("embeddings.parquet"),
    log:
        "logs/embed/{dataset}/{arch}/{regimen}/embed.log",
    conda:
        ENV
    threads: lambda wildcards: training_params(config, wildcards.arch)["threads"]
    resources:
        gpu=config["resources"]["embed"]["gpu"],
        runtime=config["resources"]["embed"]["runtime"],
        mem_mb=config["resources"]["embed"]["mem_mb"],
    params:
        batch_size=lambda wildcards: training_params(config, wildcards.arch)["eval_batch_size"],
        device=lambda wildcards: training_params(config, wildcards.arch)["device"],
    script:
        "../scripts/embed.py"


rule umap:
    input:
        LAYOUT.embeddings_file("embeddings.parquet"),
    output:
        LAYOUT.embeddings_file("umap.parquet"),
    log:
        "logs/embed/{dataset}/{arch}/{regimen}/umap.log",
    conda:
        ENV
    params:
        umap=config["embed"]["umap"],
    script:
        "../scripts/umap_layout.py"


rule figure4:
    input:
        umap=[run.umap_path for run in EMBED_PLAN.figure_runs],
        manifest=LAYOUT.dataset_file("manifest.json", config["embed"]["dataset"]),
    output:
        report(
            LAYOUT.figure(4),
            caption="../report/figure4.rst",
            category="Figures",
        ),
    log:
        "logs/embed/figure4.log",
    conda:
        ENV
    params:
        titles=[run.title for run in EMBED_PLAN.figure_runs],
        note=EMBED_PLAN.note,
    script:
        "../scripts/figure4.py"


rule outliers:
    input:
        **outlier_inputs(config),
        umap=[run.umap_path for run in EMBED_PLAN.outlier_runs],
    output:
        csv=LAYOUT.outliers_file("outliers.csv"),
        html=LAYOUT.outliers_file("index.html"),
        img=directory(LAYOUT.outliers_file("img")),
    log:
        "logs/embed/outliers.log",
    conda:
        ENV
    params:
        names=[run.name for run in EMBED_PLAN.outlier_runs],
        titles=[run.title for run in EMBED_PLAN.outlier_runs],
        note=EMBED_PLAN.note,
        isolation_forest=config["embed"]["isolation_forest"],
    script:
        "../scripts/outliers.py"
