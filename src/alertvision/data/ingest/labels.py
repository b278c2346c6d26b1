"""The labels table of a real-alert source: which objects to keep, their label and subset.

An object listed more than once is resolved as BTSbot compiles its lists (trues, then vars, then
dims, then rejects; each later list drops the objects already taken): the row of the subset that
comes first in :data:`SUBSET_PRECEDENCE` wins (subsets not named there come after, alphabetically),
and the choice is counted. Rows repeating an object with the same subset are dropped and counted.
An object given two different labels in the same subset is an error naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

LABEL_COLUMNS = ("objectId", "label", "source_set")
#: BTSbot's order of its source lists (compile_ZTFIDs.py): an object in several keeps the first.
SUBSET_PRECEDENCE = ("trues", "vars", "dims", "rejects")
#: Objects named in a report where several are concerned.
NAME_FIRST = 10


class LabelsError(ValueError):
    """A labels table that cannot be used; the message names the file and the problem."""


def _rank(subset: str) -> tuple[int, str]:
    return (SUBSET_PRECEDENCE.index(subset), "") if subset in SUBSET_PRECEDENCE else (len(SUBSET_PRECEDENCE), subset)


def resolve_listings(df: pd.DataFrame, origin: str = "labels table") -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per object: repeated rows dropped, an object in several subsets kept in the first by
    :data:`SUBSET_PRECEDENCE`. Returns the table and a report (counts and the first objects of each kind)."""
    report: dict[str, Any] = {"repeated_rows": 0, "in_several_subsets": 0, "in_several_subsets_first": []}
    if not df["objectId"].duplicated().any():
        return df.reset_index(drop=True), report
    labels_per_subset = df.groupby(["objectId", "source_set"], sort=False)["label"].nunique()
    conflicting = labels_per_subset[labels_per_subset > 1]
    if len(conflicting):
        names = list(dict.fromkeys(conflicting.index.get_level_values("objectId")))
        raise LabelsError(
            f"{origin}: {len(names)} object(s) listed with different labels in the same subset, "
            f"e.g. {', '.join(names[:NAME_FIRST])}: a source has one label; fix the table"
        )
    deduplicated = df.drop_duplicates(subset=["objectId", "source_set"], keep="first")
    report["repeated_rows"] = int(len(df) - len(deduplicated))
    order = deduplicated.assign(_rank=deduplicated["source_set"].map(_rank))
    order = order.sort_values("_rank", kind="stable")
    several = order["objectId"].duplicated(keep=False)
    chosen = order.drop_duplicates(subset="objectId", keep="first")
    if several.any():
        examples = []
        for oid, group in order[several].groupby("objectId", sort=True):
            examples.append(f"{oid}: {' > '.join(group['source_set'])}")
        report["in_several_subsets"] = len(examples)
        report["in_several_subsets_first"] = examples[:NAME_FIRST]
    # the table keeps its first-listed order
    kept = chosen.drop(columns="_rank").set_index("objectId")
    first_seen = pd.unique(df["objectId"])
    return kept.loc[first_seen].reset_index(), report


def check_labels(
    df: pd.DataFrame, origin: str = "labels table", reserved: Iterable[str] = ()
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Check a labels table (objectId, label 0/1, source_set; more columns ride along) and resolve objects
    listed more than once (see the module docstring). Returns the table and the resolution report.

    ``reserved``: the columns an alert already has (its packet's fields, the features, the contract's
    columns); a labels column of the same name would overwrite them and is an error naming it.
    """
    missing = [c for c in LABEL_COLUMNS if c not in df.columns]
    if missing:
        raise LabelsError(
            f"{origin}: lacks column(s) {', '.join(missing)} "
            f"(needs {', '.join(LABEL_COLUMNS)}; has {', '.join(map(str, df.columns))})"
        )
    colliding = [c for c in df.columns if c in set(reserved) and c not in LABEL_COLUMNS]
    if colliding:
        raise LabelsError(
            f"{origin}: column(s) {', '.join(map(str, colliding))} would overwrite the alerts' own "
            f"fields of that name; rename them (e.g. label_{colliding[0]}) or drop them"
        )
    blank_id = df["objectId"].isna() | (df["objectId"].astype(str).str.strip() == "")
    if blank_id.any():
        rows = [int(i) + 2 for i in np.flatnonzero(blank_id.to_numpy())]
        raise LabelsError(
            f"{origin}: {len(rows)} row(s) without an objectId (line(s) "
            f"{', '.join(map(str, rows[:NAME_FIRST]))} of the table, counting the header as 1)"
        )
    df = df.copy()
    df["objectId"] = df["objectId"].astype(str).str.strip()
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
    return resolve_listings(df, origin)


def read_labels(path: str | os.PathLike, reserved: Iterable[str] = ()) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read and check a labels table from CSV or Parquet (see :func:`check_labels`); returns the table and
    the resolution report."""
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"labels table {path} not found (config key data.avro.labels)")
    df = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    return check_labels(df, str(path), reserved)
