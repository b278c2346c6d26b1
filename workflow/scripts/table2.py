"""Snakemake adapter: Table 2 from the benchmark JSON files, with the compute estimate of the config's
workload (training alerts counted in the ZTF dataset)."""

from pathlib import Path

from alertvision.logs import start_job
from alertvision.study.steps import table2

start_job(snakemake)
table2(
    snakemake.input.json,
    Path(snakemake.output.csv).parent,
    workload=snakemake.params.workload,
    alerts_file=snakemake.input.alerts,
    splits_cfg=snakemake.params.splits,
)
