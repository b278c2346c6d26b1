"""Snakemake adapter: penultimate-layer embeddings of a run's test alerts."""

from pathlib import Path

from alertvision.logs import start_job
from alertvision.study.steps import embed

start_job(snakemake)
embed(
    snakemake.input.model,
    Path(snakemake.input.alerts).parent,
    snakemake.output[0],
    batch_size=snakemake.params.batch_size,
    threads=snakemake.threads,
    device=snakemake.params.device,
)
