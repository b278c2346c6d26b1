"""Snakemake adapter: aggregate the multi-modal runs' trigger policies into f1.csv."""

from alertvision.logs import start_job
from alertvision.study.steps import f1_table

start_job(snakemake)
f1_table(
    snakemake.input.metrics,
    snakemake.output.table,
    snakemake.output.peak_mag,
    snakemake.input.get("exclude"),
    bootstrap=snakemake.params.bootstrap,
)
