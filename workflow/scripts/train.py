"""Snakemake adapter: train one grid cell."""
from pathlib import Path

from alertvision.logs import setup_logging
from alertvision.steps import train

setup_logging(snakemake.log[0])
training = dict(snakemake.params.training, threads=snakemake.threads)
train(Path(snakemake.input.alerts).parent, snakemake.input.split, Path(snakemake.output.metrics).parent,
      arch_cfg=snakemake.params.arch, training=training, seed=snakemake.params.run_info["seed"],
      weights_json=snakemake.input.get("weights"), run_info=snakemake.params.run_info)
