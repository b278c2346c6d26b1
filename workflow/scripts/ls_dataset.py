"""Snakemake adapter: pair the ZTF alerts with Legacy Survey images."""
from pathlib import Path

from alertvision.logs import start_job
from alertvision.sources import ingest_ls

start_job(snakemake)
config = {"legacysurvey": snakemake.params.legacysurvey, "data": snakemake.params.data,
          "splits": snakemake.params.splits}
ingest_ls(config, Path(snakemake.input.alerts).parent, Path(snakemake.output.alerts).parent)
