"""Snakemake adapter: train every grid seed of one cell in this one job, each into its own run folder."""

from alertvision.training.signals import record_stop_signals_until_exit

# first, and until the process exits: a time-limit warning or a preemption during start-up, between seeds or
# after the outputs are written is recorded instead of killing the process (see workflow/scripts/train.py);
# one between seeds stops the next seed after its first step, with its checkpoint
record_stop_signals_until_exit(snakemake.config["checkpoints"]["enabled"])

from pathlib import Path  # noqa: E402

from alertvision.logs import start_job  # noqa: E402
from alertvision.study.steps import train  # noqa: E402

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
