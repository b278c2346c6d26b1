"""Snakemake adapter: train every grid seed of one cell in this one job, each into its own run folder."""

from alertvision.training.signals import record_stop_signals_until_exit

# first, and until the process exits: a time-limit warning or a preemption during start-up, between seeds or
# after the outputs are written is recorded instead of killing the process (see workflow/scripts/train.py);
# one between seeds stops the next seed after its first step, with its checkpoint
record_stop_signals_until_exit(snakemake.config["checkpoints"]["enabled"])

from alertvision.logs import start_job  # noqa: E402
from alertvision.study.steps import train  # noqa: E402

start_job(snakemake)
train(
    snakemake.params.job,  # the cell's job, for its first grid seed (alertvision.study.jobs.TrainJob.params)
    threads=snakemake.threads,
    seeds=snakemake.params.seeds,
    checkpoints=snakemake.config["checkpoints"],  # not a param: changing it reruns nothing
)
