"""Snakemake adapter: draw Figure 3."""
from alertvision.logs import setup_logging
from alertvision.steps import figure3

setup_logging(snakemake.log[0])
figure3(snakemake.input[0], snakemake.output[0], policies=snakemake.params.policies)
