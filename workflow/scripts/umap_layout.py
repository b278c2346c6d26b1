"""Snakemake adapter: the seeded 2-D UMAP of an embeddings table."""

from alertvision.logs import start_job
from alertvision.study.steps import umap

start_job(snakemake)
umap(snakemake.input[0], snakemake.output[0], snakemake.params.umap)
