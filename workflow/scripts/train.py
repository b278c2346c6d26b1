"""Snakemake adapter: train one grid cell (with its sweep's best.yaml when the architecture is swept)."""

from alertvision.training.signals import record_stop_signals_until_exit

# first, before the heavy imports (seconds), and until the process exits: SLURM's time-limit warning or a
# preemption while the job starts up stops the run after its first step, and one after the outputs are
# written changes nothing, instead of killing the process
record_stop_signals_until_exit(snakemake.config["checkpoints"]["enabled"])

from alertvision.logs import start_job  # noqa: E402
from alertvision.study.steps import train  # noqa: E402

start_job(snakemake)
train(
    snakemake.params.job,  # the job as the rule resolved it (alertvision.study.jobs.TrainJob.params)
    threads=snakemake.threads,
    checkpoints=snakemake.config["checkpoints"],  # not a param: changing it reruns nothing
)
