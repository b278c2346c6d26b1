"""Snakemake adapter: draw Figure 4 from the UMAP tables of its panels."""
from alertvision.figure4 import figure4_from_files
from alertvision.logs import start_job

start_job(snakemake)
figure4_from_files(dict(zip(snakemake.params.titles, snakemake.input.umap, strict=True)), snakemake.input.manifest,
                   snakemake.output[0], note=snakemake.params.note)
