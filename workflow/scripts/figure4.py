"""Snakemake adapter: Figure 4 from the UMAP tables of the plan's runs."""

from alertvision.logs import start_job
from alertvision.study.steps import figure4

start_job(snakemake)
figure4(
    dict(zip(snakemake.params.titles, snakemake.input.umap, strict=True)),
    snakemake.input.manifest,
    snakemake.output[0],
    note=snakemake.params.note,
)
