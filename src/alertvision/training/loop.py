"""One training run of one grid cell: prepare -> fit -> predict -> write.

Read top to bottom: set-up, data, model, loss and optimiser, then the epoch loop of the training
engine (:func:`alertvision.training.engine.fit`: early stopping on the validation loss), then the
test split and the outputs (model.pt, history.csv, metrics.json, predictions.parquet with what the
trigger policies need), each written atomically. The policies are scored by the evaluation stage
(:mod:`alertvision.evaluation.aggregate`), from predictions.parquet. A multi-modal run (model spec
``modality: multimodal``) also feeds the metadata features of each alert (the dataset's survey's: ZTF's
25, or those its manifest names). A sweep trial is a job without a run folder or test split
(:meth:`~alertvision.study.jobs.TrainJob.trial`): nothing is written and the test split is never read.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from alertvision.atomic import check_writable, write_csv, write_json, write_parquet
from alertvision.data.contract import Dataset, open_dataset
from alertvision.data.splits import check_eval_classes
from alertvision.models import build_model, save_model
from alertvision.models.classifier import AlertClassifier
from alertvision.models.inputs import input_norm_for
from alertvision.models.weights import ResolvedWeights
from alertvision.settings import HeadSettings, ModelSpec, TrainingSettings
from alertvision.study.jobs import TrainJob
from alertvision.study.plan import RUN_FILES  # noqa: F401  (the files a run writes; re-exported)
from alertvision.training.checkpoint import CHECKPOINT_NAME, Checkpointer, params_digest
from alertvision.training.data import Batches, Loading
from alertvision.training.device import pick_device, seed_everything
from alertvision.training.engine import (
    EarlyStopping,
    FitResult,
    FitSettings,
    Optimisation,
    Precision,
    Validation,
    evaluate,
    fit,
)
from alertvision.training.metadata import metadata_matrix
from alertvision.training.schedule import epoch_warmup_cosine, warmup_cosine
from alertvision.training.transfer import transfer_record

log = logging.getLogger(__name__)


def build_run_model(
    spec: ModelSpec | Mapping[str, Any],
    head: HeadSettings | Mapping[str, Any],
    weights: ResolvedWeights | None,
    metadata_fill: Any = None,
    metadata_features: tuple[str, ...] | None = None,
) -> AlertClassifier:
    """The model a run trains: the factory's model, fed as the regimen's ``input_norm`` says (default
    ``l2``: the stored triplet times the architecture's ``input_scale``, whatever the weights); a
    multi-modal one reads ``metadata_features`` (None: ZTF's)."""
    spec = ModelSpec.of(spec)
    input_norm = input_norm_for(spec.norm, weights, spec.scale)
    return build_model(
        spec, head, weights, input_norm=input_norm, metadata_fill=metadata_fill, metadata_features=metadata_features
    )


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, or NaN when only one class is present or a score is not finite (a diverged model: the
    run then stops on its validation loss, with a message naming the likely cause)."""
    if len(np.unique(labels)) != 2 or not np.all(np.isfinite(scores)):
        return float("nan")
    return float(roc_auc_score(labels, scores))


def predict(model: torch.nn.Module, batches: Batches, loss_fn, precision: Precision) -> tuple[np.ndarray, float]:
    """Scores (sigmoid) in the order of ``batches.rows`` and the mean loss."""
    return evaluate(model, batches, loss_fn, precision, score=torch.sigmoid)


def train_run(
    job: TrainJob,
    *,
    weights: ResolvedWeights | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    checkpoint: bool = True,
    keep_checkpoint: bool = False,
    checkpoint_every_s: float | None = None,
    min_epoch_s: float | None = None,
    loader_workers: int | None = None,
) -> dict[str, Any]:
    """Train the model of ``job`` from ``weights`` (None: random init) and write its run folder
    (``job.run_dir``; none: nothing written); returns the metrics. Without ``job.test_split`` the test
    split is never read.

    ``on_epoch(epoch, history_row)`` runs after each epoch's validation; an exception it raises (a sweep's
    ``optuna.TrialPruned``) ends the run with nothing written. ``checkpoint``: save and resume as
    :func:`_checkpointer` says (every epoch, every ``checkpoint_every_s`` within one, at once on SIGTERM
    or SIGUSR1, which end the run with :class:`~alertvision.training.engine.Preempted`; removed with the
    outputs unless ``keep_checkpoint``). ``min_epoch_s``: see :class:`~alertvision.training.engine.FitSettings`.
    ``loader_workers``: threads making batches ahead (None: :meth:`~alertvision.training.data.Loading.for_device`);
    the results do not depend on it.
    """
    # --- prepare: set-up, data, model --------------------------------------------------------------
    started = time.time()
    prepared = _set_up(job, weights, loader_workers)
    run, model, settings = prepared.run, prepared.model, prepared.settings

    # --- fit: epochs, early stopping on the validation loss ----------------------------------------
    checkpointer = _checkpointer(job, weights, checkpoint_every_s) if checkpoint else None
    fit_settings = FitSettings(int(settings.epochs), prepared.precision, min_epoch_s=min_epoch_s, progress=progress)
    fitted = _fit(model, run, prepared.loss_fn, settings, fit_settings, checkpointer, on_epoch, job.model)
    model.load_state_dict(fitted.best.state)

    # --- predict: the test split --------------------------------------------------------------------
    predictions, test_metrics = (
        _test(model, run, prepared.loss_fn, prepared.precision) if job.test_split else (None, {})
    )
    metrics = {
        **job.run_info,
        **test_metrics,
        **_run_metrics(model, run, fitted, prepared.loss_fn, prepared.precision, job.model, weights, settings),
        "seconds": time.time() - started,
    }

    # --- write: model.pt, history.csv, predictions.parquet, metrics.json -----------------------------
    if job.run_dir is not None:
        out_dir = Path(job.run_dir)
        info = {**job.run_info, "weight_id": metrics["weight_id"]}
        save_model(model, out_dir / "model.pt", spec=job.model, head_cfg=prepared.head, info=info)
        _write(out_dir, fitted.history, predictions, metrics)
        if checkpointer is not None and not keep_checkpoint:
            checkpointer.remove()
    if job.test_split:
        test_auc, test_loss = metrics["test_roc_auc"], metrics["test_loss"]
        log.info("test ROC AUC %.4f, loss %.4f (best epoch %d)", test_auc, test_loss, fitted.best.epoch)
    return metrics


@dataclass(frozen=True)
class _Prepared:
    """A run set up to fit: its settings, data, model (on its device), precision and loss."""

    settings: TrainingSettings
    head: HeadSettings
    run: "_RunData"
    model: AlertClassifier
    precision: Precision
    loss_fn: torch.nn.Module


def _set_up(job: TrainJob, weights: ResolvedWeights | None, loader_workers: int | None) -> _Prepared:
    """Seed, threads and device; the run folder checked writable; the data and the model (weights loaded)."""
    settings, head = TrainingSettings.from_config(job.training), HeadSettings.from_config(job.training)
    seed_everything(job.seed)
    torch.set_num_threads(settings.threads)
    device = pick_device(settings.device)
    if job.run_dir is not None:
        check_writable(job.run_dir, "the run's outputs")
    loading = Loading.for_device(device, loader_workers)
    run = _prepare(job.dataset_dir, job.split_file, job.model, settings, job.seed, job.test_split, loading)
    model = build_run_model(job.model, head, weights, run.metadata_fill, run.data.metadata_features).to(device)
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    precision = Precision(device, settings.bf16 and device.type == "cuda", memory_format)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(run.n_neg / run.n_pos, device=device))
    return _Prepared(settings, head, run, model, precision, loss_fn)


def _checkpointer(job: TrainJob, weights: ResolvedWeights | None, every_s: float | None) -> Checkpointer | None:
    """The run's checkpoint (``run_dir/.checkpoint.pt``), keyed by its parameters (model spec, training block,
    seed, weights, run identity) and the bytes of its inputs: a run resumes from a checkpoint of the same
    key only. None without a run folder."""
    if job.run_dir is None:
        return None
    weight = weights.weight_id if weights else None
    key = {"arch": job.model.as_dict(), "training": dict(job.training), "seed": job.seed, "weights": weight}
    digest = params_digest({**key, "run_info": job.run_info}, _inputs(job.dataset_dir, job.split_file))
    return Checkpointer(Path(job.run_dir) / CHECKPOINT_NAME, digest, every_s)


def _inputs(dataset_dir: str | os.PathLike, split_file: str | os.PathLike) -> tuple[str | os.PathLike | Path, ...]:
    """The files whose bytes key a run's checkpoint: the split table and the dataset's manifest (if any)."""
    return (split_file, *[p for p in [Path(dataset_dir) / "manifest.json"] if p.is_file()])


def _write(
    out_dir: Path, history: list[dict[str, Any]], predictions: pd.DataFrame | None, metrics: Mapping[str, Any]
) -> None:
    """history.csv, predictions.parquet (if the test split was scored) and metrics.json, each atomically."""
    write_csv(out_dir / "history.csv", pd.DataFrame(history))
    if predictions is not None:
        write_parquet(out_dir / "predictions.parquet", predictions)
    write_json(out_dir / "metrics.json", _finite(metrics))


@dataclass
class _RunData:
    """A run's dataset, rows of each split, labels, inputs and batches."""

    data: Dataset
    rows: dict[str, np.ndarray]
    labels: np.ndarray
    images: np.ndarray | None
    metadata: np.ndarray | None
    metadata_fill: Any
    train: Batches
    n_pos: float
    n_neg: float
    eval_batch_size: int
    loading: Loading

    def batches(self, split: str) -> Batches:
        """The evaluation batches of ``split``."""
        rows, loading = self.rows[split], self.loading
        return Batches(
            self.images,
            rows,
            self.labels[rows],
            self.eval_batch_size,
            metadata=self.metadata,
            workers=loading.workers,
            pin_memory=loading.pin_memory,
        )


def _prepare(
    dataset_dir: str | os.PathLike,
    split_file: str | os.PathLike,
    spec: ModelSpec,
    settings: TrainingSettings,
    seed: int,
    test_split: bool,
    loading: Loading = Loading(),
) -> _RunData:
    """The run's data: its splits checked (none empty, both classes where they are needed), the
    multi-modal features, and the training and validation batches."""
    data = open_dataset(dataset_dir)
    table = pd.read_parquet(split_file)
    labels = data.alerts["label"].to_numpy(dtype=np.float32)
    splits = ("train", "val", "test") if test_split else ("train", "val")
    rows = {s: table.loc[table["split"] == s, "row"].to_numpy() for s in splits}
    for split, r in rows.items():
        if len(r) == 0:
            raise ValueError(f"{split_file}: the {split} split is empty")
    check_eval_classes(table, labels, str(split_file), splits[1:])
    y_train = labels[rows["train"]]
    n_pos, n_neg = float(y_train.sum()), float(len(y_train) - y_train.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"{split_file}: the train split holds only one class ({int(n_pos)} positive, {int(n_neg)} negative alerts)"
        )
    metadata, metadata_fill = None, None
    if spec.multimodal:
        metadata, metadata_fill = metadata_matrix(
            data.alerts,
            np.concatenate(list(rows.values())),
            rows["train"],
            spec.metadata_fill or "error",
            data.metadata_features,
        )
    images = None if spec.kind == "none" else data.images  # the metadata-only model reads no image
    bs = settings.batch_size
    train = Batches(
        images,
        rows["train"],
        y_train,
        bs,
        shuffle=True,
        augment=settings.augment,
        seed=seed + 1,
        metadata=metadata,
        min_batch=bs if settings.drop_last else 2,
        workers=loading.workers,
        pin_memory=loading.pin_memory,
    )
    if len(train) == 0:
        raise ValueError(
            f"{split_file}: {len(y_train)} training alerts make no full batch of {bs} "
            f"(training.drop_last is on): lower training.batch_size or turn drop_last off"
        )
    return _RunData(
        data, rows, labels, images, metadata, metadata_fill, train, n_pos, n_neg, settings.eval_batch_size, loading
    )


def _fit(
    model: AlertClassifier,
    run: _RunData,
    loss_fn: torch.nn.Module,
    settings: TrainingSettings,
    fit_settings: FitSettings,
    checkpointer: Checkpointer | None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None,
    spec: ModelSpec,
) -> FitResult:
    """AdamW and the run's schedule through the training engine; the history and the best epoch, whose
    validation loss is finite."""
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=float(settings.lr),
        weight_decay=float(settings.weight_decay),
        betas=tuple(float(b) for b in settings.betas),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(settings, len(run.train)))
    rows = run.rows
    log.info(
        "training %s on %d alerts (%d positive), val %d, test %s, %d epochs of %d steps on %s",
        spec.timm_name or spec.kind,
        len(rows["train"]),
        int(run.n_pos),
        len(rows["val"]),
        len(rows["test"]) if "test" in rows else "unused",
        fit_settings.epochs,
        len(run.train),
        fit_settings.precision.device,
    )
    y_val = run.labels[rows["val"]]
    fitted = fit(
        model,
        run.train,
        Validation(run.batches("val"), torch.sigmoid, lambda scores: {"val_roc_auc": roc_auc(y_val, scores)}),
        Optimisation(loss_fn, optimizer, scheduler, per_epoch=settings.schedule == "epoch"),
        fit_settings,
        stopping=EarlyStopping(int(settings.patience), float(settings.min_improvement), int(settings.start_from_epoch)),
        checkpoint=checkpointer,
        on_epoch=on_epoch,
    )
    if fitted.best.state is None:
        raise FloatingPointError(
            f"no epoch gave a finite validation loss (last: {fitted.history[-1]['val_loss']}); "
            f"check the dataset for NaN or infinite images or features, or lower training.lr"
        )
    return fitted


def _test(
    model: AlertClassifier, run: _RunData, loss_fn: torch.nn.Module, precision: Precision
) -> tuple[pd.DataFrame, dict[str, float]]:
    """The test split's predictions (with what the trigger policies need) and its ROC AUC and loss."""
    test_scores, test_loss = predict(model, run.batches("test"), loss_fn, precision)
    test = run.data.alerts.iloc[run.rows["test"]]
    columns = ("alert_id", "objectId", "jd", "source_set", "label", "magpsf")
    predictions = pd.DataFrame({**{c: test[c].to_numpy() for c in columns}, "score": test_scores})
    return predictions, {"test_roc_auc": roc_auc(test["label"].to_numpy(), test_scores), "test_loss": test_loss}


def _run_metrics(
    model: AlertClassifier,
    run: _RunData,
    fitted: FitResult,
    loss_fn: torch.nn.Module,
    precision: Precision,
    spec: ModelSpec,
    weights: ResolvedWeights | None,
    settings: TrainingSettings,
) -> dict[str, Any]:
    """What metrics.json says of the run besides its identity, test scores and time."""
    rows, best, device = run.rows, fitted.best, precision.device
    return {
        "n_train_alerts": int(len(rows["train"])),
        "n_train_sources": int(run.data.alerts.iloc[rows["train"]]["objectId"].nunique()),
        "n_val_alerts": int(len(rows["val"])),
        **({"n_test_alerts": int(len(rows["test"]))} if "test" in rows else {}),
        "pos_weight": float(loss_fn.pos_weight),
        "best_epoch": best.epoch,
        "epochs_run": len(fitted.history),
        "val_loss_best": best.val_loss,
        "val_roc_auc_best": fitted.history[best.epoch - 1]["val_roc_auc"],
        "input_size": spec.input_size or None,
        "params": int(sum(p.numel() for p in model.parameters())),
        "weight_id": weights.weight_id if weights else None,
        **_weights_from_run(weights),
        "input_norm": model.input_norm.spec() if run.images is not None else None,
        "metadata_fill": spec.metadata_fill if run.metadata is not None else None,
        "synthetic": run.data.synthetic,
        "survey": str(run.data.manifest.get("survey") or "ztf"),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": int(settings.threads),
        "bf16": precision.bf16,
    }


def _weights_from_run(weights: ResolvedWeights | None) -> dict[str, Any]:
    """Where a transfer regimen's weights came from (the run of this study, its validation score and config
    digest), for metrics.json; nothing for other weights, whose metrics stay as they were."""
    record = transfer_record(weights.folder) if weights is not None else None
    if record is None:
        return {}
    keys = ("run", "run_info", "val_roc_auc_best", "chosen_on", "config_digest")
    return {"weights_from_run": {k: record.get(k) for k in keys}}


def _lr_factor(settings: TrainingSettings, steps_per_epoch: int) -> Callable[[int], float]:
    """The factor of ``training.schedule`` as LambdaLR calls it: per epoch (``epoch``) or per step (``step``)."""
    epochs = int(settings.epochs)
    if settings.schedule == "epoch":
        horizon = int(settings.schedule_epochs or epochs)
        warmup = float(settings.warmup_epochs)
        start, floor = float(settings.warmup_start_factor), float(settings.lr_floor_factor)
        return lambda e: epoch_warmup_cosine(e, warmup, horizon, start, floor)
    steps = epochs * steps_per_epoch
    warmup_steps = int(round(float(settings.warmup_epochs) * steps_per_epoch))
    return lambda s: warmup_cosine(s, steps, warmup_steps)


def _finite(value: Any) -> Any:
    """NaN -> None at any depth, so metrics.json stays valid JSON."""
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not np.isfinite(value) else value
