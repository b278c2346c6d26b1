"""Snakemake adapter: results/sweeps/summary.csv from every study's best.yaml."""
from alertvision.logs import start_job
from alertvision.sweeps import write_summary

start_job(snakemake)
write_summary(snakemake.input, snakemake.output[0])
