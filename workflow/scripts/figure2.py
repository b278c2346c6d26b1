"""Snakemake adapter: draw Figure 2."""

from alertvision.logs import start_job
from alertvision.study.steps import figure2

start_job(snakemake)
figure2(snakemake.input[0], snakemake.output[0])
