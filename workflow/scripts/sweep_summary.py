"""Snakemake adapter: the sweeps' summary table from every study's best.yaml."""

from alertvision.logs import start_job
from alertvision.study.steps import sweep_summary

start_job(snakemake)
sweep_summary(snakemake.input, snakemake.output[0])
