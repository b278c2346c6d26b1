"""Snakemake adapter: materialise a (regimen, arch)'s published weights before any training starts."""

from alertvision.logs import start_job
from alertvision.study.steps import fetch_weights

start_job(snakemake)
fetch_weights(snakemake.params.weight_id, snakemake.params.weights, snakemake.output[0])
