"""Snakemake adapter: one worker of a configuration's Optuna study."""

from alertvision.logs import start_job
from alertvision.study.steps import sweep_worker
from alertvision.sweeps.storage import unmasked_sweep

start_job(snakemake)
sweep_worker(
    snakemake.params.job,  # the job its trials vary (alertvision.study.jobs.sweep_job)
    snakemake.output[0],
    sweep_cfg=unmasked_sweep(snakemake),
    study_name=snakemake.params.study,
    threads=snakemake.threads,
)
