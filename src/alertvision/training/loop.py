"""The training loop: one run of one grid cell, from a dataset folder and a split table to a model.

Read top to bottom: set-up, data, model, loss and optimiser, the epoch loop with early stopping on
the validation loss, then the test split and the outputs (model.pt, history.csv, metrics.json,
predictions.parquet with what the trigger policies need), each written atomically. The policies are
scored by the evaluation stage (:mod:`alertvision.evaluation.aggregate`), from predictions.parquet. A
multi-modal run (model spec ``modality: multimodal``) also feeds the 25 metadata features of each alert. A sweep trial
passes ``out_dir=None`` and ``test_split=False``: nothing is written and the test split is never read.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from alertvision.atomic import write_csv, write_json, write_parquet
from alertvision.data.contract import open_dataset
from alertvision.data.splits import check_eval_classes
from alertvision.models import build_model, save_model
from alertvision.models.classifier import AlertClassifier
from alertvision.models.inputs import input_norm_for
from alertvision.models.weights import ResolvedWeights
from alertvision.training.data import Batches, to_device
from alertvision.training.metadata import metadata_matrix
from alertvision.training.schedule import epoch_warmup_cosine, warmup_cosine

log = logging.getLogger(__name__)
RUN_FILES = ("model.pt", "history.csv", "metrics.json", "predictions.parquet")


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when asked for or available (``auto``), else CPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is available")
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def check_writable(folder: str | os.PathLike) -> Path:
    """Make ``folder`` and prove a file can be written there, before any training; raise naming it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check.", suffix=".tmp"):
            pass
    except OSError as exc:
        raise PermissionError(
            f"cannot write the run's outputs to {folder}: {exc.strerror or exc}; check the "
            f"folder's permissions and that its file system is writable and not full"
        ) from exc
    return folder


def build_run_model(
    arch_cfg: Mapping[str, Any], training: Mapping[str, Any], weights: ResolvedWeights | None, metadata_fill: Any = None
) -> AlertClassifier:
    """The model a run trains: the factory's model, fed as the regimen's ``input_norm`` says (default
    ``l2``: the stored triplet times the architecture's ``input_scale``, whatever the weights)."""
    input_norm = input_norm_for(arch_cfg.get("input_norm", "l2"), weights, arch_cfg.get("input_scale", 1.0))
    return build_model(arch_cfg, training, weights, input_norm=input_norm, metadata_fill=metadata_fill)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, or NaN when only one class is present."""
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else float("nan")


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    batches: Batches,
    device: torch.device,
    loss_fn,
    autocast,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> tuple[np.ndarray, float]:
    """Scores (sigmoid) in the order of ``batches.rows`` and the mean loss."""
    model.eval()
    scores = np.empty(len(batches.rows), dtype=np.float32)
    total, n = 0.0, 0
    for x, y, pos in batches:
        x, y = to_device(x, device, memory_format), y.to(device)
        with autocast():
            logits = model(x).float()
        total += float(loss_fn(logits, y)) * len(y)
        n += len(y)
        scores[pos] = torch.sigmoid(logits).cpu().numpy()
    return scores, total / max(n, 1)


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
) -> dict[str, Any]:
    """Train one model and write its run folder; returns the metrics.

    ``on_epoch(epoch, history_row)`` is called after each epoch's validation; an exception it raises
    (a sweep's ``optuna.TrialPruned``) ends the run with nothing written. ``test_split=False`` leaves
    the test split unread and unscored; ``out_dir=None`` writes no files.
    """
    # --- set-up ----------------------------------------------------------------------------------
    started = time.time()
    seed_everything(seed)
    torch.set_num_threads(int(training["threads"]))
    device = pick_device(training["device"])
    use_bf16 = bool(training["bf16"]) and device.type == "cuda"

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)

    if out_dir is not None:
        out_dir = check_writable(out_dir)

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
    bs, ebs = int(training["batch_size"]), int(training["eval_batch_size"])
    train_batches = Batches(
        images,
        rows["train"],
        y_train,
        bs,
        shuffle=True,
        augment=bool(training["augment"]),
        seed=seed + 1,
        metadata=metadata,
        min_batch=bs if training["drop_last"] else 2,
    )
    if len(train_batches) == 0:
        raise ValueError(
            f"{split_file}: {len(y_train)} training alerts make no full batch of {bs} "
            f"(training.drop_last is on): lower training.batch_size or turn drop_last off"
        )
    val_batches = Batches(images, rows["val"], labels[rows["val"]], ebs, metadata=metadata)

    # --- model, loss, optimiser ------------------------------------------------------------------
    model = build_run_model(arch_cfg, training, weights, metadata_fill).to(device)
    memory_format = torch.channels_last if training["channels_last"] else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    pos_weight = torch.tensor(n_neg / n_pos, device=device)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=float(training["lr"]),
        weight_decay=float(training["weight_decay"]),
        betas=tuple(float(b) for b in training["betas"]),
    )
    epochs = int(training["epochs"])
    steps = epochs * len(train_batches)
    per_epoch = training["schedule"] == "epoch"
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(training, len(train_batches)))
    min_improvement = float(training["min_improvement"])
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
    history: list[dict[str, Any]] = []
    best = {"val_loss": float("inf"), "epoch": -1, "state": None}
    lowest = float("inf")  # the lowest validation loss so far, improvement or not (BTSbot's reference)
    bar = tqdm(total=steps, desc="train", unit="step", disable=not progress, mininterval=5)
    for epoch in range(1, epochs + 1):
        t0 = time.time()
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        total, n = 0.0, 0
        for x, y, _ in train_batches:
            x, y = to_device(x, device, memory_format), y.to(device)
            with autocast():
                logits = model(x).float()
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if not per_epoch:
                scheduler.step()
            total += loss.item() * len(y)
            n += len(y)
            bar.update(1)
        if per_epoch:
            scheduler.step()
        else:
            lr = optimizer.param_groups[0]["lr"]
        val_scores, val_loss = predict(model, val_batches, device, loss_fn, autocast, memory_format)
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / n,
                "val_loss": val_loss,
                "val_roc_auc": roc_auc(labels[rows["val"]], val_scores),
                "lr": lr,
                "seconds": time.time() - t0,
            }
        )
        log.info(
            "epoch %d: train loss %.4f, val loss %.4f, val AUC %.3f",
            epoch,
            history[-1]["train_loss"],
            val_loss,
            history[-1]["val_roc_auc"],
        )
        if on_epoch is not None:
            on_epoch(epoch, dict(history[-1]))
        if val_loss * (1.0 + min_improvement) < lowest:
            best = {
                "val_loss": val_loss,
                "epoch": epoch,
                "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            }
        elif epoch - best["epoch"] >= int(training["patience"]):
            log.info("early stop: no improvement of the validation loss for %d epochs", training["patience"])
            break
        lowest = min(lowest, val_loss)
    bar.close()
    if best["state"] is None:
        raise FloatingPointError(
            f"no epoch gave a finite validation loss (last: {history[-1]['val_loss']}); "
            f"check the dataset for NaN or infinite images or features, or lower training.lr"
        )
    model.load_state_dict(best["state"])

    # --- test split and outputs --------------------------------------------------------------------
    if test_split:
        test_batches = Batches(images, rows["test"], labels[rows["test"]], ebs, metadata=metadata)
        test_scores, test_loss = predict(model, test_batches, device, loss_fn, autocast, memory_format)
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
        "best_epoch": best["epoch"],
        "epochs_run": len(history),
        "val_loss_best": best["val_loss"],
        "val_roc_auc_best": history[best["epoch"] - 1]["val_roc_auc"],
        "input_size": int(arch_cfg.get("input_size", 0)) or None,
        "params": int(sum(p.numel() for p in model.parameters())),
        "weight_id": weights.weight_id if weights else None,
        "input_norm": model.input_norm.spec() if images is not None else None,
        "metadata_fill": arch_cfg.get("metadata_fill") if metadata is not None else None,
        "synthetic": data.synthetic,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": int(training["threads"]),
        "bf16": use_bf16,
        "seconds": time.time() - started,
    }
    if out_dir is not None:
        save_model(
            model,
            out_dir / "model.pt",
            arch_cfg=arch_cfg,
            head_cfg=training,
            info={**dict(run_info or {}), "weight_id": metrics["weight_id"]},
        )
        write_csv(out_dir / "history.csv", pd.DataFrame(history))
        if test_split:
            write_parquet(out_dir / "predictions.parquet", predictions)
        write_json(out_dir / "metrics.json", _finite(metrics))
    if test_split:
        log.info("test ROC AUC %.4f, loss %.4f (best epoch %d)", metrics["test_roc_auc"], test_loss, best["epoch"])
    return metrics


def _lr_factor(training: Mapping[str, Any], steps_per_epoch: int) -> Callable[[int], float]:
    """The factor of ``training.schedule`` as LambdaLR calls it: per epoch (``epoch``) or per step (``step``)."""
    epochs = int(training["epochs"])
    if training["schedule"] == "epoch":
        horizon = int(training["schedule_epochs"] or epochs)
        warmup = float(training["warmup_epochs"])
        start, floor = float(training["warmup_start_factor"]), float(training["lr_floor_factor"])
        return lambda e: epoch_warmup_cosine(e, warmup, horizon, start, floor)
    steps = epochs * steps_per_epoch
    warmup_steps = int(round(float(training["warmup_epochs"]) * steps_per_epoch))
    return lambda s: warmup_cosine(s, steps, warmup_steps)


def _finite(value: Any) -> Any:
    """NaN -> None at any depth, so metrics.json stays valid JSON."""
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not np.isfinite(value) else value
