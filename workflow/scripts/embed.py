"""Snakemake adapter: penultimate-layer embeddings of one run's test alerts."""
from pathlib import Path

from alertvision.embeddings import embed_run
from alertvision.logs import start_job

start_job(snakemake)
embed_run(snakemake.input.model, Path(snakemake.input.alerts).parent, snakemake.output[0],
          batch_size=snakemake.params.batch_size, threads=snakemake.threads, device=snakemake.params.device)
