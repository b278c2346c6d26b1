"""Penultimate-layer embeddings of a trained run's test alerts: one row per alert, one column per unit.

The embedding is :meth:`AlertClassifier.embed`, the input of the head's final Linear (width
``dense2``). The classifier score comes from the same pass (final Linear on the embedding, then
the sigmoid), so it equals what the model's ``forward`` gives in eval mode.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from alertvision.atomic import write_parquet
from alertvision.data.contract import open_dataset
from alertvision.models import load_model
from alertvision.models.classifier import AlertClassifier
from alertvision.training.data import Batches
from alertvision.training.device import pick_device

log = logging.getLogger(__name__)

EMBEDDING_PREFIX = "emb_"
ID_COLUMNS = ("alert_id", "objectId", "candid", "jd", "fid", "source_set", "label", "score")


def embedding_columns(df: pd.DataFrame) -> list[str]:
    """The embedding columns of a table, in unit order (emb_0, emb_1, ...)."""
    cols = [c for c in df.columns if c.startswith(EMBEDDING_PREFIX)]
    return sorted(cols, key=lambda c: int(c[len(EMBEDDING_PREFIX) :]))


def embedding_matrix(df: pd.DataFrame) -> np.ndarray:
    """The embeddings of a table as a float32 (n_alerts, width) array."""
    cols = embedding_columns(df)
    if not cols:
        raise ValueError(f"no {EMBEDDING_PREFIX}* columns in the table")
    return df[cols].to_numpy(dtype=np.float32)


@torch.inference_mode()
def embed_batches(
    model: AlertClassifier, batches: Batches, device: torch.device, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (n, dense2), scores (n,)) in the order of ``batches.rows``; the model is put in eval mode."""
    model.eval()
    width = model.head.out.in_features
    emb = np.empty((len(batches.rows), width), dtype=np.float32)
    scores = np.empty(len(batches.rows), dtype=np.float32)
    for x, _, pos in tqdm(batches, desc="embed", unit="batch", disable=not progress, mininterval=5):
        z = model.embed(x.to(device)).float()
        logits = model.head.out(z).squeeze(-1)
        emb[pos] = z.cpu().numpy()
        scores[pos] = torch.sigmoid(logits).cpu().numpy()
    return emb, scores


def split_rows(alerts: pd.DataFrame, split: str) -> np.ndarray:
    """Row numbers (into images.npy) of the alerts of one split."""
    rows = np.flatnonzero(alerts["split"].to_numpy() == split)
    if len(rows) == 0:
        raise ValueError(f"the dataset has no {split} alerts (its alerts.parquet 'split' column)")
    return rows


def embedding_table(alerts: pd.DataFrame, rows: np.ndarray, emb: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """Identifiers, label, subset and classifier score of ``alerts.iloc[rows]`` beside their embeddings."""
    picked = alerts.iloc[rows]
    table = pd.DataFrame({c: picked[c].to_numpy() for c in ID_COLUMNS if c != "score"})
    table["score"] = scores
    units = pd.DataFrame(emb, columns=[f"{EMBEDDING_PREFIX}{i}" for i in range(emb.shape[1])])
    return pd.concat([table, units], axis=1)


def embed_run(
    model_path: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str = "test",
    batch_size: int = 256,
    threads: int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> pd.DataFrame:
    """Embed every ``split`` alert of a dataset with a saved model and write the table to ``out`` (parquet)."""
    started = time.time()
    if threads:
        torch.set_num_threads(int(threads))
    dev = pick_device(device)
    model, info = load_model(model_path, map_location=dev)
    data = open_dataset(dataset_dir)
    rows = split_rows(data.alerts, split)
    batches = Batches(data.images, rows, data.alerts["label"].to_numpy()[rows], int(batch_size))
    emb, scores = embed_batches(model.to(dev), batches, dev, progress=progress)
    table = embedding_table(data.alerts, rows, emb, scores)
    write_parquet(out, table)
    log.info(
        "embedded %d %s alerts of %s with %s (%s): width %d, %.1f s on %s",
        len(rows),
        split,
        Path(dataset_dir).name,
        Path(model_path),
        info.get("arch", "?"),
        emb.shape[1],
        time.time() - started,
        dev,
    )
    return table
