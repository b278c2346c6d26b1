"""Where a study lives and how it is opened: storage, sampler, pruner, and recovery of interrupted trials.

A study is one Optuna study per configuration (dataset, modality, arch, regimen, fraction), shared by
every worker through its storage: a journal file (one node, the default) or a database URL such as
PostgreSQL (a cluster). Both storages carry a heartbeat: a running trial whose worker stopped beating
for ``grace_s`` seconds, or whose worker process is gone from this very machine, is marked FAIL by
the next worker that looks, and its parameters are queued again (up to ``max_retry`` times).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import random
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner, NopPruner
from optuna.samplers import BaseSampler, TPESampler
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from alertvision.settings import PrunerSettings, with_schema_defaults
from alertvision.study.jobs import sweep_params

log = logging.getLogger(__name__)

JOURNAL_FILE = "study.journal"
#: system attributes this module keeps on a trial; a retried trial starts without them
ATTR_PREFIX = "alertvision:"
OWNER_ATTR = ATTR_PREFIX + "owner"
HEARTBEAT_ATTR = ATTR_PREFIX + "heartbeat"
PRUNERS = ("none", "median", "hyperband")


def is_url(storage_spec: str) -> bool:
    """Whether a storage spec is a database URL (else it is a journal file path)."""
    return "://" in str(storage_spec)


def resolve_storage(sweep_cfg: Mapping[str, Any], journal_path: str | os.PathLike) -> str:
    """``sweep.storage`` when set, else the URL in the environment variable ``sweep.storage_env``,
    else the journal file ``journal_path``."""
    if sweep_cfg.get("storage"):
        return str(sweep_cfg["storage"])
    env = with_schema_defaults(sweep_cfg, "sweep")["storage_env"]
    if env and os.environ.get(env):
        return os.environ[env]
    return str(journal_path)


def unmasked_sweep(job: Any) -> dict[str, Any]:
    """A Snakemake job's sweep settings with the real storage URL: its ``params.sweep`` holds the URL with
    the password masked (params are stored in ``.snakemake/metadata``), the job's config the URL itself."""
    return {**dict(job.params.sweep), "storage": sweep_params(job.config, job.wildcards.arch)["storage"]}


def display_storage(storage_spec: str) -> str:
    """The storage spec with any database password masked, for logs and reports."""
    if not is_url(storage_spec):
        return str(storage_spec)
    from sqlalchemy.engine import make_url  # deferred: sqlalchemy is heavy

    try:
        return make_url(storage_spec).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: show only its scheme
        return storage_spec.split("://", 1)[0] + "://***"


def make_pruner(pruner_cfg: PrunerSettings | Mapping[str, Any] | str | None, epochs: int) -> BasePruner:
    """The pruner ``sweep.pruner`` names: none (the paper), median, or hyperband (epochs as resource)."""
    cfg = PrunerSettings.from_block(pruner_cfg)
    warmup = int(cfg.warmup_epochs)
    if cfg.kind == "none":
        return NopPruner()
    if cfg.kind == "median":
        return MedianPruner(n_startup_trials=int(cfg.startup_trials), n_warmup_steps=warmup)
    if cfg.kind == "hyperband":
        return HyperbandPruner(
            min_resource=max(1, warmup),
            max_resource=max(int(epochs), max(1, warmup)),
            reduction_factor=int(cfg.reduction_factor),
        )
    raise ValueError(f"config key sweep.pruner.kind: {cfg.kind!r} is not one of {', '.join(PRUNERS)}")


class TrialSeededSampler(BaseSampler):
    """TPE whose random state for trial *n* is seeded from (seed, n).

    A plain seeded TPESampler in each of several workers would draw the same random start-up
    trials in every worker; seeding per trial number gives each trial its own stream, and one worker
    repeats its whole sequence. With several workers the sequence still depends on which trials had
    finished when each was sampled, so it is not reproducible trial by trial.
    """

    def __init__(self, seed: int, **tpe_kwargs: Any):
        self._seed, self._kwargs = int(seed), tpe_kwargs
        self._tpe = self._for_trial(0)

    def _for_trial(self, number: int) -> TPESampler:
        state = int(np.random.SeedSequence([self._seed, int(number)]).generate_state(1)[0])
        return TPESampler(seed=state, **self._kwargs)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._tpe = self._for_trial(trial.number)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict:
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict) -> dict:
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any
    ) -> Any:
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self._tpe.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()


# --- who runs a trial, and whether it still runs ---------------------------------------------------


@functools.lru_cache(maxsize=1)
def _machine() -> dict[str, Any]:
    """This machine and PID namespace: a pid means the same process only within them."""

    def read(path: str) -> str | None:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return None

    try:
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        pidns = None
    return {"host": socket.gethostname(), "boot": read("/proc/sys/kernel/random/boot_id"), "pidns": pidns}


def _owner() -> dict[str, Any]:
    return {**_machine(), "pid": os.getpid()}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: gone for our purpose
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def owner_dead(owner: Mapping[str, Any] | None) -> bool:
    """Whether a trial's recorded worker process is known to be gone (only decidable on its machine)."""
    if not owner:
        return False
    here = _machine()
    if owner.get("host") != here["host"] or owner.get("pidns") != here["pidns"]:
        return False
    if owner.get("boot") != here["boot"]:
        return True  # the machine rebooted since
    return not _process_alive(int(owner["pid"]))


class _OwnerMixin:
    """Stamp each running trial with its worker process; count trials of dead local workers as stale."""

    def record_heartbeat(self, trial_id: int) -> None:
        stamped = self.__dict__.setdefault("_alertvision_stamped", set())
        try:
            if trial_id not in stamped:
                self.set_trial_system_attr(trial_id, OWNER_ATTR, _owner())
                stamped.add(trial_id)
            super().record_heartbeat(trial_id)
        except UpdateFinishedTrialError:
            pass  # another worker took it for stale; this worker's tell will say so

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = set(super()._get_stale_trial_ids(study_id))
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            if owner_dead(trial.system_attrs.get(OWNER_ATTR)):
                stale.add(trial._trial_id)
        return sorted(stale)


class _JournalHeartbeat(JournalStorage, BaseHeartbeat):
    """A journal storage with a heartbeat kept in a trial system attribute (Optuna's has none)."""

    def __init__(self, backend: JournalFileBackend, heartbeat_s: float, grace_s: float, stale_callback: Any = None):
        super().__init__(backend)
        self._heartbeat_s, self._grace_s, self._stale_callback = heartbeat_s, grace_s, stale_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now, stale = time.time(), []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_ATTR)
            if beat is None and trial.datetime_start is not None:
                beat = trial.datetime_start.timestamp()
            if beat is not None and now - float(beat) > self._grace_s:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_s

    def get_heartbeat_stale_trial_callback(self) -> Any:
        return self._stale_callback


class JournalStudyStorage(_OwnerMixin, _JournalHeartbeat):
    """Journal file storage with heartbeat and dead-worker detection."""


class RDBStudyStorage(_OwnerMixin, RDBStorage):
    """Database storage (Optuna's heartbeat) with dead-worker detection."""


class RetryInterrupted:
    """Queue an interrupted trial's parameters again, as Optuna's RetryHeartbeatStaleTrialCallback,
    without carrying over the dead worker's stamps."""

    def __init__(self, max_retry: int | None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            self._retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trial = copy.deepcopy(trial)
        log.warning(
            "trial %d was interrupted (worker %s); queueing its parameters again",
            trial.number,
            trial.system_attrs.get(OWNER_ATTR),
        )
        trial.system_attrs = {k: v for k, v in trial.system_attrs.items() if not k.startswith(ATTR_PREFIX)}
        self._retry(study, trial)


def make_storage(
    storage_spec: str, *, heartbeat_s: int = 60, grace_s: int | None = None, max_retry: int | None = 3
) -> BaseStorage:
    """The storage a spec names: a database URL, or a journal file path (its folder is created)."""
    grace_s = int(grace_s or 3 * heartbeat_s)
    retry = RetryInterrupted(max_retry)
    if not is_url(storage_spec):
        path = Path(storage_spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStudyStorage(JournalFileBackend(str(path)), heartbeat_s, grace_s, retry)
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                return RDBStudyStorage(
                    storage_spec,
                    engine_kwargs={"pool_pre_ping": True},
                    heartbeat_interval=int(heartbeat_s),
                    grace_period=grace_s,
                    heartbeat_stale_trial_callback=retry,
                )
        except Exception as exc:  # workers creating the tables of a new database at once collide; retry
            if attempt == 4:
                raise
            log.info("opening %s failed (%s); retrying", display_storage(storage_spec), exc)
            time.sleep(0.5 + random.random() * 2)
    raise AssertionError("unreachable")


def open_study(
    name: str,
    storage_spec: str | BaseStorage,
    seed: int,
    pruner: BasePruner | None = None,
    *,
    direction: str = "maximize",
    startup_trials: int = 10,
    heartbeat_s: int = 60,
    grace_s: int | None = None,
    max_retry: int | None = 3,
) -> optuna.Study:
    """Create or load the study ``name`` in a storage, with the per-trial seeded TPE sampler.

    A journal file path or a database URL (``postgresql+psycopg2://user:pw@host:port/db``) is opened
    with a heartbeat every ``heartbeat_s`` seconds; a trial silent for ``grace_s`` (default three
    beats) or whose worker process died on this machine is failed and retried up to ``max_retry``
    times.
    """
    storage = (
        storage_spec
        if isinstance(storage_spec, BaseStorage)
        else make_storage(storage_spec, heartbeat_s=heartbeat_s, grace_s=grace_s, max_retry=max_retry)
    )
    sampler = TrialSeededSampler(seed, n_startup_trials=int(startup_trials), constant_liar=True)
    return optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        pruner=pruner or NopPruner(),
        direction=direction,
        load_if_exists=True,
    )
