"""A worker adds trials to a shared study until the study holds the requested number of finished ones.

Any number of workers (Snakemake jobs, processes, machines) may run on one study at once. Finished
means COMPLETE or PRUNED, counted over all workers. Before each trial a worker fails and requeues
interrupted trials; it waits while the trials still missing are running elsewhere, so that when every
worker has returned the study holds exactly the requested number. A trial number is never run twice:
the storage hands out each number once, and a trial that two workers asked for at the same moment
beyond the requested number is given back (FAIL, user attribute ``surplus``) before it samples.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter
from typing import Callable

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.trial import TrialState

log = logging.getLogger(__name__)

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
SURPLUS_ATTR = "surplus"


class SurplusTrial(Exception):
    """Raised by a trial asked for when enough trials were already finished or running."""


def state_counts(study: optuna.Study) -> dict[str, int]:
    """Trials per state (complete, pruned, fail, running, waiting), with given-back trials as ``surplus``."""
    counts = Counter()
    for t in study.get_trials(deepcopy=False):
        surplus = t.state == TrialState.FAIL and t.user_attrs.get(SURPLUS_ATTR)
        counts["surplus" if surplus else t.state.name.lower()] += 1
    return {k: counts.get(k, 0) for k in ("complete", "pruned", "fail", "running", "waiting", "surplus")}


def fail_interrupted(study: optuna.Study) -> None:
    """Fail the study's trials whose worker stopped (heartbeat or dead process) and requeue them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _admitted(objective: Callable[[optuna.Trial], float], total: int, ran: list[int]):
    def run(trial: optuna.Trial) -> float:
        ahead = [
            t
            for t in trial.study.get_trials(deepcopy=False, states=(*DONE, TrialState.RUNNING))
            if t.number < trial.number
        ]
        if len(ahead) >= total:
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise SurplusTrial(
                f"given back: {len(ahead)} trials before it are finished or running (sweep.trials {total})"
            )
        ran.append(trial.number)
        return objective(trial)

    return run


def run_worker(
    study: optuna.Study, objective: Callable[[optuna.Trial], float], total_trials: int, *, poll_s: float = 10.0
) -> list[int]:
    """Run trials until ``study`` holds ``total_trials`` COMPLETE or PRUNED trials over all workers;
    returns the numbers of the trials this worker ran. A rerun with the same total runs none; a larger
    total runs the difference. An exception of ``objective`` other than ``TrialPruned`` propagates
    (its trial is FAIL and not retried)."""
    ran: list[int] = []
    while True:
        fail_interrupted(study)
        counts = state_counts(study)
        done = counts["complete"] + counts["pruned"]
        if done >= total_trials:
            return ran
        if done + counts["running"] >= total_trials and counts["waiting"] == 0:
            # the missing trials run elsewhere: wait until they finish or are found interrupted
            time.sleep(poll_s)
            continue
        try:
            study.optimize(_admitted(objective, total_trials, ran), n_trials=1, catch=(), gc_after_trial=True)
        except SurplusTrial:
            continue
        except UpdateFinishedTrialError as exc:
            log.warning("another worker took this worker's trial for interrupted: %s", exc)
