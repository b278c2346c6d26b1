"""Snakemake adapter: gather the per-architecture rows into results/table2.csv, .md and .tex."""
from alertvision.logs import setup_logging
from alertvision.throughput import table2

setup_logging(snakemake.log[0])
table2(snakemake.input, snakemake.output.csv, snakemake.output.md, snakemake.output.tex)
