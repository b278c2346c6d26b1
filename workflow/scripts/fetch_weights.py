"""Snakemake adapter: materialise a (regimen, arch)'s published weights before any training starts."""
from alertvision.logs import setup_logging
from alertvision.steps import fetch_weights

setup_logging(snakemake.log[0])
fetch_weights(snakemake.params.weight_id, snakemake.params.weights, snakemake.output[0])
