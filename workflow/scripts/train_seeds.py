"""Snakemake adapter: train every grid seed of one cell in this one job, each into its own run folder."""

from pathlib import Path

from alertvision.logs import start_job
from alertvision.study.steps import train

start_job(snakemake)
info = snakemake.params.run_info
for seed, run_dir in zip(snakemake.params.seeds, snakemake.params.run_dirs, strict=True):
    train(
        Path(snakemake.input.alerts).parent,
        snakemake.input.split,
        run_dir,
        arch_cfg=snakemake.params.arch,
        training=dict(snakemake.params.training, threads=snakemake.threads),
        seed=seed,
        weights_dir=snakemake.input.get("weights"),
        weight_id=snakemake.params.weight_id,
        run_info={**info, "seed": seed},
        best_yaml=snakemake.input.get("best"),
        checkpoints=snakemake.config["checkpoints"],  # not a param: changing it reruns nothing
    )
