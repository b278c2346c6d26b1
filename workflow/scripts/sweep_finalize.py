"""Snakemake adapter: best.yaml, trials.csv and the plot of a finished study."""

from pathlib import Path

from alertvision.logs import start_job
from alertvision.study.steps import sweep_finalize
from alertvision.sweeps.storage import unmasked_sweep

start_job(snakemake)
sweep_finalize(
    Path(snakemake.output.best).parent,
    snakemake.params.job,
    study_name=snakemake.params.study,
    sweep_cfg=unmasked_sweep(snakemake),
)
