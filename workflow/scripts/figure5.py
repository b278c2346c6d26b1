"""Snakemake adapter: draw Figure 5 (transfer to a new survey)."""

from alertvision.logs import start_job
from alertvision.study.steps import figure5

start_job(snakemake)
figure5(snakemake.input[0], snakemake.output[0])
