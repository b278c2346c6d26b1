"""Snakemake adapter: a transfer regimen's weights, the encoder of the best of its candidate runs."""

from alertvision.logs import start_job
from alertvision.study.steps import transfer_weights

start_job(snakemake)
transfer_weights(snakemake.input.metrics, snakemake.output[0], weight_id=snakemake.params.weight_id)
