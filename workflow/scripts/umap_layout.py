"""Snakemake adapter: seeded 2-D UMAP of one run's embeddings."""
from alertvision.latent import write_umap
from alertvision.logs import start_job

start_job(snakemake)
write_umap(snakemake.input[0], snakemake.output[0], snakemake.params.umap)
