"""The objective of a trial: train with the sampled hyperparameters, score on the validation split.

Value: the validation ROC AUC of the model the training loop keeps (the epoch of lowest validation
loss; early stopping as in a seed run), maximised. ``sweep.objective: val_loss`` minimises that
epoch's validation loss instead. Each epoch reports an intermediate value to the pruner:
``sweep.intermediate`` val_loss (default) or val_roc_auc, negated when its natural direction is not
the study's (pruners compare intermediate values in the study's direction). The test split is
never read, and a trial writes no files.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import optuna

from alertvision.study.jobs import TrainJob
from alertvision.sweeps.space import suggest
from alertvision.training.loop import train_run

#: objective -> (training-loop metric, study direction)
OBJECTIVES = {"val_roc_auc": ("val_roc_auc_best", "maximize"), "val_loss": ("val_loss_best", "minimize")}
#: intermediate value -> (history column, its natural direction)
INTERMEDIATES = {"val_loss": ("val_loss", "minimize"), "val_roc_auc": ("val_roc_auc", "maximize")}
TRIAL_METRICS = ("best_epoch", "epochs_run", "val_loss_best", "val_roc_auc_best", "params", "seconds")


def direction(objective: str) -> str:
    """The study direction of an objective name."""
    if objective not in OBJECTIVES:
        raise ValueError(f"config key sweep.objective: {objective!r} is not one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[objective][1]


def intermediate_value(row: Mapping[str, Any], intermediate: str, study_direction: str) -> float:
    """The value an epoch reports to the pruner, signed so that better is better in ``study_direction``."""
    column, natural = INTERMEDIATES[intermediate]
    value = float(row[column])
    return value if natural == study_direction else -value


def make_objective(
    job: TrainJob,
    *,
    space: Mapping[str, Any],
    seed: int,
    weights: Any = None,
    objective: str = "val_roc_auc",
    intermediate: str = "val_loss",
    progress: bool = False,
) -> Callable[[optuna.Trial], float]:
    """An Optuna objective training one trial: ``job`` with the sampled values of ``space`` (trained with
    ``seed``) on the train split, scored on the val split; pruned between epochs when the study's pruner
    says so."""
    metric, study_direction = OBJECTIVES[objective], direction(objective)
    if intermediate not in INTERMEDIATES:
        raise ValueError(f"config key sweep.intermediate: {intermediate!r} is not one of {', '.join(INTERMEDIATES)}")

    def run(trial: optuna.Trial) -> float:
        values = suggest(trial, space)

        def on_epoch(epoch: int, row: dict[str, Any]) -> None:
            trial.report(intermediate_value(row, intermediate, study_direction), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        metrics = train_run(job.trial(values, seed), weights=weights, progress=progress, on_epoch=on_epoch)
        trial.set_user_attr("metrics", {k: metrics[k] for k in TRIAL_METRICS})
        return float(metrics[metric[0]])

    return run
