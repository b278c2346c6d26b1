"""Snakemake adapter: draw Figure 3."""

from alertvision.logs import start_job
from alertvision.study.steps import figure3

start_job(snakemake)
figure3(snakemake.input[0], snakemake.output[0], policies=snakemake.params.policies)
