"""The two steps a pipeline calls: a sweep worker (N per study, concurrently) and the finalisation."""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import optuna
import pandas as pd

from alertvision.atomic import write_json
from alertvision.data.contract import ALERTS_FILE
from alertvision.settings import ModelSpec
from alertvision.study.jobs import TrainJob
from alertvision.sweeps.objective import direction, make_objective
from alertvision.sweeps.report import sweep_plot, write_best, write_trials_csv
from alertvision.sweeps.space import default_params, search_space
from alertvision.sweeps.storage import (
    JOURNAL_FILE,
    display_storage,
    is_url,
    make_pruner,
    make_storage,
    open_study,
    resolve_storage,
)
from alertvision.sweeps.worker import run_worker, state_counts

log = logging.getLogger(__name__)

#: the ``sweep`` block's defaults (the schema holds the same; this serves callers without a validated config)
SWEEP_DEFAULTS: dict[str, Any] = {
    "trials": 0,
    "workers": 1,
    "seed": 0,
    "storage": None,
    "storage_env": "ALERTVISION_SWEEP_STORAGE",
    "study_prefix": "alertvision",
    "objective": "val_roc_auc",
    "intermediate": "val_loss",
    "startup_trials": 10,
    "pruner": {"kind": "none", "startup_trials": 5, "warmup_epochs": 1, "reduction_factor": 3},
    "heartbeat_s": 60,
    "grace_s": None,
    "max_retry": 3,
    "poll_s": 10,
    "search_space": {},
}


def sweep_settings(sweep_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``sweep_cfg`` over :data:`SWEEP_DEFAULTS` (the pruner block merged key by key)."""
    cfg = copy.deepcopy(SWEEP_DEFAULTS)
    for key, value in dict(sweep_cfg or {}).items():
        cfg[key] = {**cfg["pruner"], **value} if key == "pruner" and isinstance(value, Mapping) else value
    return cfg


def _study(study_name: str, storage: str, cfg: Mapping[str, Any], epochs: int):
    return open_study(
        study_name,
        storage,
        int(cfg["seed"]),
        make_pruner(cfg["pruner"], epochs),
        direction=direction(cfg["objective"]),
        startup_trials=int(cfg["startup_trials"]),
        heartbeat_s=int(cfg["heartbeat_s"]),
        grace_s=cfg["grace_s"],
        max_retry=cfg["max_retry"],
    )


def check_val_split(dataset_dir: str | os.PathLike, split_file: str | os.PathLike) -> None:
    """Refuse a split whose val split cannot give a ROC AUC (empty, or one class)."""
    table = pd.read_parquet(split_file, columns=["row", "split"])
    labels = pd.read_parquet(Path(dataset_dir) / ALERTS_FILE, columns=["label"])["label"].to_numpy()
    val = labels[table.loc[table["split"] == "val", "row"].to_numpy()]
    if len(np.unique(val)) < 2:
        raise ValueError(
            f"{split_file}: the val split has {len(val)} alerts of {len(np.unique(val))} class(es); "
            "a sweep needs both classes to score trials by validation ROC AUC"
        )


def sweep_run(
    job: TrainJob,
    out_dir: str | os.PathLike,
    *,
    sweep_cfg: Mapping[str, Any] | None,
    study_name: str,
    weights: Any = None,
    progress: bool = True,
    worker_report: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """One sweep worker: add trials of ``job`` (its configuration's) to the study until it holds
    ``sweep.trials`` finished ones.

    Any number of workers may run on a study at once. The study lives in ``sweep.storage`` (or the
    URL in ``$<sweep.storage_env>``), else in the journal file ``out_dir/study.journal``. Returns what
    this worker did, also written as JSON to ``worker_report`` when given.
    """
    started, cfg = time.time(), sweep_settings(sweep_cfg)
    total = int(cfg["trials"])
    storage = resolve_storage(cfg, Path(out_dir) / JOURNAL_FILE)
    report: dict[str, Any] = {"study": study_name, "storage": display_storage(storage), "trials": total, "ran": []}
    if total > 0:
        check_val_split(job.dataset_dir, job.split_file)
        objective = make_objective(
            job,
            space=search_space(cfg, job.model.modality, job.model.kind, job.model.head),
            seed=int(cfg["seed"]),
            weights=weights,
            objective=cfg["objective"],
            intermediate=cfg["intermediate"],
            progress=progress,
        )
        study = _study(study_name, storage, cfg, int(job.training["epochs"]))
        report["ran"] = run_worker(study, objective, total, poll_s=float(cfg["poll_s"]))
        report["counts"] = state_counts(study)
    report["seconds"] = time.time() - started
    log.info("sweep %s: this worker ran %d trials (%s)", study_name, len(report["ran"]), report.get("counts"))
    if worker_report is not None:
        write_json(worker_report, report)
    return report


def sweep_finalize(
    out_dir: str | os.PathLike,
    *,
    study_name: str,
    training: Mapping[str, Any],
    sweep_cfg: Mapping[str, Any] | None,
    best_yaml: str | os.PathLike | None = None,
    trials_csv: str | os.PathLike | None = None,
    plot: str | os.PathLike | None = None,
    modality: str = "image",
    model: ModelSpec | None = None,
) -> dict[str, Any]:
    """Write best.yaml, trials.csv and the plot of a study of ``modality`` models whose workers are
    done (default paths in ``out_dir``); with ``sweep.trials: 0`` best.yaml holds the configured values
    (training block, and the ``model`` spec's CNN keys). Returns best.yaml's content. Raises when the
    study holds fewer finished trials than ``sweep.trials``."""
    cfg, out_dir = sweep_settings(sweep_cfg), Path(out_dir)
    best_yaml = best_yaml or out_dir / "best.yaml"
    trials_csv = trials_csv or out_dir / "trials.csv"
    plot = plot or out_dir / "trials.png"
    total = int(cfg["trials"])
    kind, head = (model.kind, model.head) if model is not None else ("timm", None)
    defaults = default_params(search_space(cfg, modality, kind, head), training, model)
    storage = resolve_storage(cfg, out_dir / JOURNAL_FILE)
    study = None
    if total > 0:
        if not is_url(storage) and not Path(storage).is_file():
            raise RuntimeError(f"no study journal at {storage}: run the sweep workers first")
        study = optuna.load_study(study_name=study_name, storage=make_storage(storage))
        counts = state_counts(study)
        if counts["complete"] + counts["pruned"] < total:
            raise RuntimeError(
                f"study {study_name} in {display_storage(storage)} holds {counts} trials, fewer "
                f"finished than sweep.trials {total}: run its workers again"
            )
    best = write_best(
        study,
        best_yaml,
        defaults,
        name=study_name,
        storage=display_storage(storage) if study else None,
        objective=cfg["objective"],
        requested=total,
    )
    write_trials_csv(study, trials_csv)
    sweep_plot(trials_csv, plot, title=study_name, direction=direction(cfg["objective"]))
    return best
