"""Snakemake adapter: the split table of one training fraction."""

from pathlib import Path

from alertvision.logs import start_job
from alertvision.study.steps import split

start_job(snakemake)
split(Path(snakemake.input.alerts).parent, snakemake.params.fraction, snakemake.params.splits, snakemake.output[0])
