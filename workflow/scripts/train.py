"""Snakemake adapter: train one grid cell (with its sweep's best.yaml when the architecture is swept)."""

from alertvision.training.signals import stop_signals

# before the heavy imports (seconds): SLURM's time-limit warning or a preemption that arrives while the job
# starts up is recorded, and the run saves and exits after its first step, instead of dying of the signal
with stop_signals(snakemake.config["checkpoints"]["enabled"]):
    from pathlib import Path

    from alertvision.logs import start_job
    from alertvision.study.steps import train

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
