"""Snakemake adapter: the ZTF dataset of data.source."""

from pathlib import Path

from alertvision.logs import start_job
from alertvision.study.steps import ingest_ztf

start_job(snakemake)
ingest_ztf({"data": snakemake.params.data, "splits": snakemake.params.splits}, Path(snakemake.output.alerts).parent)
