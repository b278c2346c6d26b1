"""One training run of one grid cell: prepare -> fit -> predict -> write.

Read top to bottom: set-up, data, model, loss and optimiser, then the epoch loop of the training
engine (:func:`alertvision.training.engine.fit`: early stopping on the validation loss), then the
test split and the outputs (model.pt, history.csv, metrics.json, predictions.parquet with what the
trigger policies need), each written atomically. The policies are scored by the evaluation stage
(:mod:`alertvision.evaluation.aggregate`), from predictions.parquet. A multi-modal run (model spec
``modality: multimodal``) also feeds the 25 metadata features of each alert. A sweep trial passes
``out_dir=None`` and ``test_split=False``: nothing is written and the test split is never read.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from alertvision.atomic import check_writable, write_csv, write_json, write_parquet
from alertvision.data.contract import open_dataset
from alertvision.data.splits import check_eval_classes
from alertvision.models import build_model, save_model
from alertvision.models.classifier import AlertClassifier
from alertvision.models.inputs import input_norm_for
from alertvision.models.weights import ResolvedWeights
from alertvision.settings import HeadSettings, TrainingSettings
from alertvision.study.plan import RUN_FILES  # noqa: F401  (the files a run writes; re-exported)
from alertvision.training.checkpoint import CHECKPOINT_NAME, Checkpointer, params_digest
from alertvision.training.data import Batches
from alertvision.training.device import pick_device, seed_everything
from alertvision.training.engine import Precision, evaluate, fit
from alertvision.training.metadata import metadata_matrix
from alertvision.training.schedule import epoch_warmup_cosine, warmup_cosine

log = logging.getLogger(__name__)


def build_run_model(
    arch_cfg: Mapping[str, Any],
    head: HeadSettings | Mapping[str, Any],
    weights: ResolvedWeights | None,
    metadata_fill: Any = None,
) -> AlertClassifier:
    """The model a run trains: the factory's model, fed as the regimen's ``input_norm`` says (default
    ``l2``: the stored triplet times the architecture's ``input_scale``, whatever the weights)."""
    input_norm = input_norm_for(arch_cfg.get("input_norm", "l2"), weights, arch_cfg.get("input_scale", 1.0))
    return build_model(arch_cfg, head, weights, input_norm=input_norm, metadata_fill=metadata_fill)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, or NaN when only one class is present."""
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else float("nan")


def predict(model: torch.nn.Module, batches: Batches, loss_fn, precision: Precision) -> tuple[np.ndarray, float]:
    """Scores (sigmoid) in the order of ``batches.rows`` and the mean loss."""
    return evaluate(model, batches, loss_fn, precision, score=torch.sigmoid)


def train_run(
    dataset_dir: str | os.PathLike,
    split_file: str | os.PathLike,
    out_dir: str | os.PathLike | None,
    *,
    arch_cfg: Mapping[str, Any],
    training: Mapping[str, Any],
    seed: int,
    weights: ResolvedWeights | None = None,
    run_info: Mapping[str, Any] | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    test_split: bool = True,
    checkpoint: bool = True,
    keep_checkpoint: bool = False,
    checkpoint_every_s: float | None = None,
    min_epoch_s: float | None = None,
) -> dict[str, Any]:
    """Train one model and write its run folder; returns the metrics.

    ``training`` is :func:`alertvision.config.training_params` of the run: read once into
    :class:`~alertvision.settings.TrainingSettings` and the model's
    :class:`~alertvision.settings.HeadSettings`; the mapping itself keys the checkpoint.

    ``on_epoch(epoch, history_row)`` is called after each epoch's validation; an exception it raises
    (a sweep's ``optuna.TrialPruned``) ends the run with nothing written. ``test_split=False`` leaves
    the test split unread and unscored; ``out_dir=None`` writes no files. With ``checkpoint`` (and an
    ``out_dir``) the run saves its state after every epoch in ``out_dir/.checkpoint.pt`` and resumes
    from a checkpoint of the same parameters and inputs (also saved every ``checkpoint_every_s``
    within an epoch, and at once on SIGTERM or SIGUSR1, which then end the run with
    :class:`~alertvision.training.engine.Preempted`); the file goes when the outputs are written,
    unless ``keep_checkpoint``. ``min_epoch_s`` makes each epoch last at least that long (see
    :func:`~alertvision.training.engine.fit`).
    """
    # --- set-up ----------------------------------------------------------------------------------
    started = time.time()
    settings, head = TrainingSettings.from_config(training), HeadSettings.from_config(training)
    seed_everything(seed)
    torch.set_num_threads(settings.threads)
    device = pick_device(settings.device)
    use_bf16 = settings.bf16 and device.type == "cuda"

    if out_dir is not None:
        out_dir = check_writable(out_dir, "the run's outputs")

    # --- data --------------------------------------------------------------------------------------
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
    if arch_cfg.get("modality", "image") == "multimodal":
        metadata, metadata_fill = metadata_matrix(
            data.alerts, np.concatenate(list(rows.values())), rows["train"], arch_cfg.get("metadata_fill", "error")
        )
    images = None if arch_cfg["kind"] == "none" else data.images  # the metadata-only model reads no image
    bs, ebs = settings.batch_size, settings.eval_batch_size
    train_batches = Batches(
        images,
        rows["train"],
        y_train,
        bs,
        shuffle=True,
        augment=settings.augment,
        seed=seed + 1,
        metadata=metadata,
        min_batch=bs if settings.drop_last else 2,
    )
    if len(train_batches) == 0:
        raise ValueError(
            f"{split_file}: {len(y_train)} training alerts make no full batch of {bs} "
            f"(training.drop_last is on): lower training.batch_size or turn drop_last off"
        )
    val_batches = Batches(images, rows["val"], labels[rows["val"]], ebs, metadata=metadata)

    # --- model, loss, optimiser ------------------------------------------------------------------
    model = build_run_model(arch_cfg, head, weights, metadata_fill).to(device)
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    precision = Precision(device, use_bf16, memory_format)
    pos_weight = torch.tensor(n_neg / n_pos, device=device)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=float(settings.lr),
        weight_decay=float(settings.weight_decay),
        betas=tuple(float(b) for b in settings.betas),
    )
    epochs = int(settings.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(settings, len(train_batches)))
    log.info(
        "training %s on %d alerts (%d positive), val %d, test %s, %d epochs of %d steps on %s",
        arch_cfg.get("timm_name", arch_cfg["kind"]),
        len(y_train),
        int(n_pos),
        len(rows["val"]),
        len(rows["test"]) if test_split else "unused",
        epochs,
        len(train_batches),
        device,
    )

    # --- epochs, early stopping on validation loss -----------------------------------------------
    y_val = labels[rows["val"]]
    checkpointer = None
    if checkpoint and out_dir is not None:
        key = {"arch": arch_cfg, "training": training, "seed": seed, "weights": weights.weight_id if weights else None}
        inputs = (split_file, *[p for p in [Path(dataset_dir) / "manifest.json"] if p.is_file()])
        checkpointer = Checkpointer(out_dir / CHECKPOINT_NAME, params_digest({**key, "run_info": run_info}, inputs))
    fitted = fit(
        model,
        train_batches,
        val_batches,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        epochs=epochs,
        precision=precision,
        schedule_per_epoch=settings.schedule == "epoch",
        patience=int(settings.patience),
        min_improvement=float(settings.min_improvement),
        start_from_epoch=int(settings.start_from_epoch),
        val_score=torch.sigmoid,
        val_metrics=lambda scores: {"val_roc_auc": roc_auc(y_val, scores)},
        on_epoch=on_epoch,
        checkpoint=checkpointer,
        checkpoint_every_s=checkpoint_every_s,
        min_epoch_s=min_epoch_s,
        progress=progress,
    )
    history, best = fitted.history, fitted.best
    if best.state is None:
        raise FloatingPointError(
            f"no epoch gave a finite validation loss (last: {history[-1]['val_loss']}); "
            f"check the dataset for NaN or infinite images or features, or lower training.lr"
        )
    model.load_state_dict(best.state)

    # --- test split and outputs --------------------------------------------------------------------
    if test_split:
        test_batches = Batches(images, rows["test"], labels[rows["test"]], ebs, metadata=metadata)
        test_scores, test_loss = predict(model, test_batches, loss_fn, precision)
        test = data.alerts.iloc[rows["test"]]
        predictions = pd.DataFrame(
            {
                "alert_id": test["alert_id"].to_numpy(),
                "objectId": test["objectId"].to_numpy(),
                "jd": test["jd"].to_numpy(),
                "source_set": test["source_set"].to_numpy(),
                "label": test["label"].to_numpy(),
                "magpsf": test["magpsf"].to_numpy(),
                "score": test_scores,
            }
        )
        test_metrics = {"test_roc_auc": roc_auc(test["label"].to_numpy(), test_scores), "test_loss": test_loss}
    train_alerts = data.alerts.iloc[rows["train"]]
    metrics = {
        **dict(run_info or {}),
        **(test_metrics if test_split else {}),
        "n_train_alerts": int(len(rows["train"])),
        "n_train_sources": int(train_alerts["objectId"].nunique()),
        "n_val_alerts": int(len(rows["val"])),
        **({"n_test_alerts": int(len(rows["test"]))} if test_split else {}),
        "pos_weight": float(pos_weight),
        "best_epoch": best.epoch,
        "epochs_run": len(history),
        "val_loss_best": best.val_loss,
        "val_roc_auc_best": history[best.epoch - 1]["val_roc_auc"],
        "input_size": int(arch_cfg.get("input_size", 0)) or None,
        "params": int(sum(p.numel() for p in model.parameters())),
        "weight_id": weights.weight_id if weights else None,
        "input_norm": model.input_norm.spec() if images is not None else None,
        "metadata_fill": arch_cfg.get("metadata_fill") if metadata is not None else None,
        "synthetic": data.synthetic,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": int(settings.threads),
        "bf16": use_bf16,
        "seconds": time.time() - started,
    }
    if out_dir is not None:
        save_model(
            model,
            out_dir / "model.pt",
            arch_cfg=arch_cfg,
            head_cfg=head,
            info={**dict(run_info or {}), "weight_id": metrics["weight_id"]},
        )
        write_csv(out_dir / "history.csv", pd.DataFrame(history))
        if test_split:
            write_parquet(out_dir / "predictions.parquet", predictions)
        write_json(out_dir / "metrics.json", _finite(metrics))
        if checkpointer is not None and not keep_checkpoint:
            checkpointer.remove()
    if test_split:
        log.info("test ROC AUC %.4f, loss %.4f (best epoch %d)", metrics["test_roc_auc"], test_loss, best.epoch)
    return metrics


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
