"""Snakemake adapter: write the ZTF dataset of data.source."""
from pathlib import Path

from alertvision.logs import setup_logging
from alertvision.sources import ingest_ztf

setup_logging(snakemake.log[0])
config = {"data": snakemake.params.data, "splits": snakemake.params.splits}
ingest_ztf(config, Path(snakemake.output.alerts).parent)
