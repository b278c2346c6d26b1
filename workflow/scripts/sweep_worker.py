"""Snakemake adapter: one worker of a configuration's Optuna study."""

from pathlib import Path

from alertvision.logs import start_job
from alertvision.study.steps import sweep_worker
from alertvision.sweeps.storage import unmasked_sweep

start_job(snakemake)
sweep_worker(
    Path(snakemake.input.alerts).parent,
    snakemake.input.split,
    snakemake.output[0],
    arch_cfg=snakemake.params.arch,
    training=dict(snakemake.params.training, threads=snakemake.threads),
    sweep_cfg=unmasked_sweep(snakemake),
    study_name=snakemake.params.study,
    weights_dir=snakemake.input.get("weights"),
    weight_id=snakemake.params.weight_id,
)
