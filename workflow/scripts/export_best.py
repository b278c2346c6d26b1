"""Snakemake adapter: export the multi-modal run with the highest validation ROC AUC."""

from pathlib import Path

from alertvision.logs import start_job
from alertvision.study.steps import export_best

start_job(snakemake)
export_best(snakemake.input.metrics, Path(snakemake.output.model).parent, snakemake.params.export)
