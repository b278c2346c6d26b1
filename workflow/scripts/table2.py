"""Snakemake adapter: gather the per-architecture rows into results/table2.csv, .md and .tex, with the
compute estimate of the config's workload (training alerts counted in the ZTF dataset)."""
from alertvision.logs import start_job
from alertvision.throughput import table2
from alertvision.workload import StudyWorkload

start_job(snakemake)
workload = StudyWorkload.from_dataset(snakemake.params.workload, snakemake.input.alerts, snakemake.params.splits)
table2(snakemake.input.json, snakemake.output.csv, snakemake.output.md, snakemake.output.tex, workload)
