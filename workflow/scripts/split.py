"""Snakemake adapter: the split table of one training fraction."""
from pathlib import Path

from alertvision.logs import setup_logging
from alertvision.steps import split

setup_logging(snakemake.log[0])
split(Path(snakemake.input.alerts).parent, snakemake.params.fraction, snakemake.params.splits, snakemake.output[0])
