"""Snakemake adapter: best.yaml, trials.csv and the plot of a finished study."""
from pathlib import Path

from alertvision.logs import start_job
from alertvision.sweeps import sweep_finalize
from alertvision.sweeps.storage import unmasked_sweep

start_job(snakemake)
sweep_finalize(Path(snakemake.output.best).parent, study_name=snakemake.params.study,
               training=snakemake.params.training, sweep_cfg=unmasked_sweep(snakemake),
               best_yaml=snakemake.output.best, trials_csv=snakemake.output.trials, plot=snakemake.output.plot,
               modality=snakemake.wildcards.modality, arch_cfg=snakemake.params.arch)
