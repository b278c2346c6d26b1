"""Snakemake adapter: write the ZTF dataset of data.source."""
from pathlib import Path

from alertvision.logs import start_job
from alertvision.sources import ingest_ztf

start_job(snakemake)
config = {"data": snakemake.params.data, "splits": snakemake.params.splits}
ingest_ztf(config, Path(snakemake.output.alerts).parent)
