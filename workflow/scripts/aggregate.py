"""Snakemake adapter: aggregate run metrics into roc_auc.csv."""

from alertvision.logs import start_job
from alertvision.study.steps import aggregate

start_job(snakemake)
aggregate(snakemake.input.metrics, snakemake.output[0], bootstrap=snakemake.params.bootstrap)
