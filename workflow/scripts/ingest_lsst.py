"""Snakemake adapter: the Rubin/LSST dataset of data.lsst.source."""

from pathlib import Path

from alertvision.logs import start_job
from alertvision.study.steps import ingest_lsst

start_job(snakemake)
ingest_lsst({"data": snakemake.params.data, "splits": snakemake.params.splits}, Path(snakemake.output.alerts).parent)
