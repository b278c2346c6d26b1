"""Hyperparameter sweeps with Optuna: one study per configuration, shared by any number of workers.

- :mod:`~alertvision.sweeps.space`: Table 1's search space, overridable, and sampling it on a trial.
- :mod:`~alertvision.sweeps.storage`: study names, journal-file or database storage with heartbeat and
  retry of interrupted trials, the per-trial seeded TPE sampler, the pruner.
- :mod:`~alertvision.sweeps.objective`: one trial = one training run scored by validation ROC AUC.
- :mod:`~alertvision.sweeps.worker`: add trials until the study holds ``sweep.trials`` finished ones.
- :mod:`~alertvision.sweeps.report`: best.yaml, trials.csv, the per-study plot, summary.csv.
- :mod:`~alertvision.sweeps.run`: :func:`sweep_run` (a worker job) and :func:`sweep_finalize`.
"""

from alertvision.study.plan import study_name
from alertvision.sweeps.objective import make_objective
from alertvision.sweeps.report import (
    load_best_params,
    summary_table,
    sweep_plot,
    write_best,
    write_summary,
    write_trials_csv,
)
from alertvision.sweeps.run import SWEEP_DEFAULTS, sweep_finalize, sweep_run, sweep_settings
from alertvision.sweeps.space import TABLE1, search_space, suggest
from alertvision.sweeps.storage import make_pruner, open_study, resolve_storage
from alertvision.sweeps.worker import run_worker, state_counts

__all__ = [
    "SWEEP_DEFAULTS",
    "TABLE1",
    "load_best_params",
    "make_objective",
    "make_pruner",
    "open_study",
    "resolve_storage",
    "run_worker",
    "search_space",
    "state_counts",
    "study_name",
    "suggest",
    "summary_table",
    "sweep_finalize",
    "sweep_plot",
    "sweep_run",
    "sweep_settings",
    "write_best",
    "write_summary",
    "write_trials_csv",
]
