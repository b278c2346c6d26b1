"""Aggregate per-run metrics over seeds into the study's tables."""

from __future__ import annotations

import json
import os
from typing import Iterable

import numpy as np
import pandas as pd

from alertvision.atomic import write_csv

KEYS = ("dataset", "modality", "arch", "regimen", "fraction")


def read_metrics(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per run from its metrics.json."""
    rows = []
    for path in paths:
        with open(path) as fh:
            rows.append(json.load(fh))
    if not rows:
        raise ValueError("no metrics.json files to aggregate")
    df = pd.DataFrame(rows)
    missing = [k for k in (*KEYS, "seed", "test_roc_auc", "n_train_alerts") if k not in df.columns]
    if missing:
        raise ValueError(f"metrics lack {', '.join(missing)}")
    df["fraction"] = df["fraction"].astype(float)
    df["test_roc_auc"] = df["test_roc_auc"].astype(float)
    return df


def aggregate_roc_auc(metrics: pd.DataFrame) -> pd.DataFrame:
    """Median and standard deviation (ddof=1; empty for one seed) of test ROC AUC per configuration."""
    g = metrics.groupby(list(KEYS), sort=True)
    out = g.agg(
        n_seeds=("seed", "nunique"),
        n_train_alerts=("n_train_alerts", "median"),
        roc_auc_median=("test_roc_auc", "median"),
        roc_auc_std=("test_roc_auc", lambda s: s.std(ddof=1) if s.notna().sum() > 1 else np.nan),
        test_loss_median=("test_loss", "median"),
        synthetic=("synthetic", "all"),
    ).reset_index()
    out["n_train_alerts"] = out["n_train_alerts"].round().astype(int)
    return out


def write_roc_auc_table(metric_files: Iterable[str | os.PathLike], out_csv: str | os.PathLike) -> pd.DataFrame:
    """Read runs, aggregate, write ``roc_auc.csv``; returns the table."""
    table = aggregate_roc_auc(read_metrics(metric_files))
    write_csv(out_csv, table)
    return table
