"""Snakemake adapter: draw Figure 2."""
from alertvision.logs import setup_logging
from alertvision.steps import figure2

setup_logging(snakemake.log[0])
figure2(snakemake.input[0], snakemake.output[0])
