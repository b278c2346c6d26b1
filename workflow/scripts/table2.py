"""Snakemake adapter: gather the per-architecture rows into results/table2.csv, .md and .tex."""
from alertvision.logs import start_job
from alertvision.throughput import table2

start_job(snakemake)
table2(snakemake.input, snakemake.output.csv, snakemake.output.md, snakemake.output.tex)
