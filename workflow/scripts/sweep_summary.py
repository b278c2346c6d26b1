"""Snakemake adapter: results/sweeps/summary.csv from every study's best.yaml."""
from alertvision.logs import setup_logging
from alertvision.sweeps import write_summary

setup_logging(snakemake.log[0])
write_summary(snakemake.input, snakemake.output[0])
