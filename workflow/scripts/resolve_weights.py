"""Snakemake adapter: resolve a (regimen, arch)'s pretrained weights before any training starts."""
from alertvision.logs import setup_logging
from alertvision.steps import resolve_weights

setup_logging(snakemake.log[0])
resolve_weights(snakemake.params.weight_id, snakemake.params.weights, snakemake.output[0])
