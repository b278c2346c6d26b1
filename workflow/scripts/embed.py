"""Snakemake adapter: penultimate-layer embeddings of one run's test alerts."""
from pathlib import Path

from alertvision.embeddings import embed_run
from alertvision.logs import setup_logging

setup_logging(snakemake.log[0])
embed_run(snakemake.input.model, Path(snakemake.input.alerts).parent, snakemake.output[0],
          batch_size=snakemake.params.batch_size, threads=snakemake.threads, device=snakemake.params.device)
