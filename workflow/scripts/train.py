"""Snakemake adapter: train one grid cell."""
from pathlib import Path

from alertvision.logs import start_job
from alertvision.steps import train

start_job(snakemake)
training = dict(snakemake.params.training, threads=snakemake.threads)
arch_cfg = dict(snakemake.params.arch)
run_info = dict(snakemake.params.run_info)
if snakemake.input.get("best"):  # a swept architecture: the best trial's hyperparameters
    from alertvision.sweeps import load_best_params
    from alertvision.sweeps.space import split_params

    best = load_best_params(snakemake.input.best)
    arch_best, training_best = split_params(best)
    arch_cfg.update(arch_best)
    training.update(training_best)
    run_info.update(hyperparameters=best, hyperparameters_from=str(snakemake.input.best))
train(Path(snakemake.input.alerts).parent, snakemake.input.split, Path(snakemake.output.metrics).parent,
      arch_cfg=arch_cfg, training=training, seed=snakemake.params.run_info["seed"],
      weights_dir=snakemake.input.get("weights"), weight_id=snakemake.params.weight_id,
      run_info=run_info)
