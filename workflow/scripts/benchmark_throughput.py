"""Snakemake adapter: Table 2 rows of one architecture."""

from pathlib import Path

from alertvision.logs import start_job
from alertvision.study.steps import benchmark

start_job(snakemake)
benchmark(
    snakemake.input.model,
    Path(snakemake.input.alerts).parent,
    snakemake.output[0],
    arch=snakemake.wildcards.arch,
    arch_block=snakemake.params.arch,
    benchmark_cfg=dict(snakemake.params.benchmark, cpu_threads=snakemake.threads),
    training_cfg=snakemake.params.training,
)
