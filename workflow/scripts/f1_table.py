"""Snakemake adapter: aggregate the multi-modal runs' trigger policies into f1.csv."""
from alertvision.logs import setup_logging
from alertvision.steps import f1_table

setup_logging(snakemake.log[0])
f1_table(snakemake.input.metrics, snakemake.output.table, snakemake.output.peak_mag)
