"""Snakemake adapter: the outlier table and page of the plan's runs."""

from pathlib import Path

from alertvision.logs import start_job
from alertvision.study.steps import outliers

start_job(snakemake)
ls_manifest = snakemake.input.get("ls_manifest")
outliers(
    dict(zip(snakemake.params.names, snakemake.input.umap, strict=True)),
    Path(snakemake.input.ztf_manifest).parent,
    Path(snakemake.output.csv).parent,
    snakemake.params.isolation_forest,
    ls_dir=Path(ls_manifest).parent if ls_manifest else None,
    titles=dict(zip(snakemake.params.names, snakemake.params.titles, strict=True)),
    note=snakemake.params.note,
)
