"""Snakemake adapter: train one grid cell (with its sweep's best.yaml when the architecture is swept)."""

from alertvision.training.signals import record_stop_signals_until_exit

# first, before the heavy imports (seconds), and until the process exits: SLURM's time-limit warning or a
# preemption while the job starts up stops the run after its first step, and one after the outputs are
# written changes nothing, instead of killing the process
record_stop_signals_until_exit(snakemake.config["checkpoints"]["enabled"])

from pathlib import Path  # noqa: E402

from alertvision.logs import start_job  # noqa: E402
from alertvision.study.steps import train  # noqa: E402

start_job(snakemake)
train(
    Path(snakemake.input.alerts).parent,
    snakemake.input.split,
    Path(snakemake.output.metrics).parent,
    arch_cfg=snakemake.params.arch,
    training=dict(snakemake.params.training, threads=snakemake.threads),
    seed=snakemake.params.run_info["seed"],
    weights_dir=snakemake.input.get("weights"),
    weight_id=snakemake.params.weight_id,
    run_info=snakemake.params.run_info,
    best_yaml=snakemake.input.get("best"),
    checkpoints=snakemake.config["checkpoints"],  # not a param: changing it reruns nothing
)
