"""The labels table of a real-alert source: which objects to keep, their label and subset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

LABEL_COLUMNS = ("objectId", "label", "source_set")


class LabelsError(ValueError):
    """A labels table that cannot be used; the message names the file and the problem."""


def check_labels(df: pd.DataFrame, origin: str = "labels table") -> pd.DataFrame:
    """Check a labels table (objectId, label 0/1, source_set; more columns ride along)."""
    missing = [c for c in LABEL_COLUMNS if c not in df.columns]
    if missing:
        raise LabelsError(f"{origin}: lacks column(s) {', '.join(missing)} "
                          f"(needs {', '.join(LABEL_COLUMNS)}; has {', '.join(map(str, df.columns))})")
    df = df.copy()
    df["objectId"] = df["objectId"].astype(str).str.strip()
    dup = df["objectId"].duplicated()
    if dup.any():
        raise LabelsError(f"{origin}: objectId {df.loc[dup, 'objectId'].iloc[0]} is listed more than once")
    label = pd.to_numeric(df["label"], errors="coerce")
    bad = ~label.isin([0, 1])
    if bad.any():
        row = df.loc[bad].iloc[0]
        raise LabelsError(f"{origin}: label of {row['objectId']} is {row['label']!r}; labels must be 0 or 1")
    df["label"] = label.astype(np.int8)
    blank = df["source_set"].isna() | (df["source_set"].astype(str).str.strip() == "")
    if blank.any():
        raise LabelsError(f"{origin}: source_set of {df.loc[blank, 'objectId'].iloc[0]} is empty")
    df["source_set"] = df["source_set"].astype(str).str.strip()
    return df.reset_index(drop=True)


def read_labels(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a labels table from CSV or Parquet."""
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"labels table {path} not found (config key data.avro.labels)")
    df = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    return check_labels(df, str(path))
