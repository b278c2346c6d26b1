"""Snakemake adapter: draw Figure 4 from the UMAP tables of its panels."""
from alertvision.figure4 import figure4_from_files
from alertvision.logs import setup_logging

setup_logging(snakemake.log[0])
figure4_from_files(dict(zip(snakemake.params.titles, snakemake.input.umap, strict=True)), snakemake.input.manifest,
                   snakemake.output[0], note=snakemake.params.note)
