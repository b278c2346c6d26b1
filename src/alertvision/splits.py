"""Source-level train/val/test splits, per-source alert caps, and training fractions.

- Sources are split separately per subset (``source_set``) in the proportions of the config
  (default 0.81 / 0.09 / 0.10). Sources are allotted in exact proportion (largest remainder) after
  a seeded shuffle, rather than by one independent draw each as BTSbot does: the expected sizes
  are the same, and a small dataset cannot end up with an empty test split by chance.
- Caps (BTSbot's N100): in train, at most ``max_alerts_per_source`` random alerts per source for
  trues, dims and rejects; subsets listed in ``latest_subsets`` (vars, junk) keep their latest
  alerts, in every split, as BTSbot does.
- Training fractions take a seeded, nested sample of the capped train *sources* per subset (5% is
  inside 10%, inside 50%); val and test stay whole.
"""

from __future__ import annotations

import math
import zlib
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from alertvision.contract import SPLITS


def allot(n: int, weights: Sequence[float]) -> np.ndarray:
    """Split ``n`` into integer counts proportional to ``weights`` (largest remainder)."""
    w = np.asarray(weights, dtype=float)
    w = w / w.sum()
    raw = w * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return counts


def _rng(seed: int, *words: str | int) -> np.random.Generator:
    keys = [int(seed)] + [zlib.crc32(w.encode()) if isinstance(w, str) else int(w) for w in words]
    return np.random.default_rng(np.random.SeedSequence(keys))


def assign_source_splits(alerts: pd.DataFrame, probabilities: Sequence[float], seed: int) -> pd.Series:
    """A split label per alert: every alert of a source gets its source's split."""
    split_of: dict[str, str] = {}
    for subset, group in alerts.groupby("source_set", sort=True):
        sources = np.array(sorted(group["objectId"].unique()))
        _rng(seed, "split", str(subset)).shuffle(sources)
        counts = allot(len(sources), probabilities)
        for split, chunk in zip(SPLITS, np.split(sources, np.cumsum(counts)[:-1])):
            split_of.update(dict.fromkeys(chunk, split))
    return alerts["objectId"].map(split_of).rename("split")


def cap_mask(alerts: pd.DataFrame, max_per_source: int | None, seed: int,
             latest_subsets: Sequence[str] = ("vars", "junk")) -> np.ndarray:
    """Which alerts survive BTSbot's per-source cap (see module docstring)."""
    keep = np.ones(len(alerts), dtype=bool)
    if not max_per_source:
        return keep
    positions = pd.Series(np.arange(len(alerts)), index=alerts.index)
    for object_id, group in alerts.groupby("objectId", sort=True):
        if len(group) <= max_per_source:
            continue
        pos = positions[group.index].to_numpy()
        subset = group["source_set"].iloc[0]
        if subset in latest_subsets:
            order = np.argsort(group["jd"].to_numpy(), kind="stable")
            keep[pos[order[:-max_per_source]]] = False
        elif group["split"].iloc[0] == "train":
            drop = _rng(seed, "cap", str(object_id)).permutation(len(pos))[max_per_source:]
            keep[pos[drop]] = False
    return keep


def fraction_sources(train: pd.DataFrame, fraction: float, seed: int) -> set[str]:
    """A nested sample of train sources: ``fraction`` of each subset's sources (at least one)."""
    chosen: set[str] = set()
    for subset, group in train.groupby("source_set", sort=True):
        sources = np.array(sorted(group["objectId"].unique()))
        order = _rng(seed, "fraction", str(subset)).permutation(len(sources))
        n = max(1, math.ceil(fraction * len(sources) - 1e-9))
        chosen.update(sources[order[:n]])
    return chosen


#: Columns of alerts.parquet that the split tables read (besides alert_id).
SPLIT_COLUMNS = ("objectId", "source_set", "jd", "split")


def _capped_train(alerts: pd.DataFrame, cfg: Mapping) -> tuple[np.ndarray, pd.DataFrame]:
    """(the cap's keep mask, the train alerts it keeps) of ``alerts`` with a fresh index."""
    keep = cap_mask(alerts, cfg.get("max_alerts_per_source"), cfg["seed"], cfg.get("latest_subsets", ("vars", "junk")))
    capped = alerts[keep]
    return keep, capped[capped["split"] == "train"]


def split_table(alerts: pd.DataFrame, fraction_percent: float, cfg: Mapping) -> pd.DataFrame:
    """The rows one training run uses: columns alert_id, row (into images.npy), split.

    ``cfg`` is the ``splits`` block of the config (seed, max_alerts_per_source, latest_subsets).
    """
    alerts = alerts.reset_index(drop=True)
    keep, train = _capped_train(alerts, cfg)
    chosen = fraction_sources(train, fraction_percent / 100.0, cfg["seed"])
    use = keep & ((alerts["split"] != "train") | alerts["objectId"].isin(chosen)).to_numpy()
    out = pd.DataFrame({"alert_id": alerts["alert_id"].to_numpy()[use],
                        "row": np.flatnonzero(use).astype(np.int64),
                        "split": alerts["split"].to_numpy()[use]})
    return out


def train_alert_counts(alerts: pd.DataFrame, fractions_percent: Sequence[float], cfg: Mapping) -> dict[float, int]:
    """Training alerts of a run at each fraction: the train rows :func:`split_table` selects (the cap
    computed once). ``alerts`` needs the columns of :data:`SPLIT_COLUMNS`."""
    _, train = _capped_train(alerts.reset_index(drop=True), cfg)
    return {float(f): int(train["objectId"].isin(fraction_sources(train, float(f) / 100.0, cfg["seed"])).sum())
            for f in fractions_percent}
