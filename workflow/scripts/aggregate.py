"""Snakemake adapter: aggregate run metrics into roc_auc.csv."""
from alertvision.logs import setup_logging
from alertvision.steps import aggregate

setup_logging(snakemake.log[0])
aggregate(snakemake.input.metrics, snakemake.output[0])
