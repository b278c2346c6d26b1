"""Snakemake adapter: seeded 2-D UMAP of one run's embeddings."""
from alertvision.latent import write_umap
from alertvision.logs import setup_logging

setup_logging(snakemake.log[0])
write_umap(snakemake.input[0], snakemake.output[0], snakemake.params.umap)
