"""Snakemake adapter: write the resolved study config (defaults filled, secrets masked)."""

from alertvision.logs import start_job
from alertvision.study.steps import write_resolved_config

start_job(snakemake)
write_resolved_config(snakemake.params.config, snakemake.output[0])
