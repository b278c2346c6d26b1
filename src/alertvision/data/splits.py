"""Source-level train/val/test splits, per-source alert caps, and training fractions.

- Sources are split separately per subset (``source_set``) in the proportions of the config
  (default 0.81 / 0.09 / 0.10). Sources are allotted in exact proportion (largest remainder) after
  a seeded shuffle, rather than by one independent draw each as BTSbot does: the expected sizes
  are the same, and a small dataset cannot end up with an empty test split by chance.
- Caps (BTSbot's N100): in train, at most ``max_alerts_per_source`` random alerts per source for
  trues, dims and rejects; subsets listed in ``latest_subsets`` (vars, junk) keep their latest
  alerts, in every split, as BTSbot does.
- Training fractions take a seeded, nested sample of the capped train *sources* per subset (5% is
  inside 10%, inside 50%), as BTSbot's code samples them; ``fraction_sampling: alerts`` samples train
  *alerts* instead (the paper's wording), nested the same way. Val and test stay whole, as the paper
  says; ``fraction_eval: sampled`` samples their sources by the same fraction, as BTSbot's
  ``subsample_data`` does.
"""

from __future__ import annotations

import math
import zlib
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from alertvision.data.contract import SPLITS
from alertvision.settings import SplitSettings


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


def cap_mask(alerts: pd.DataFrame, max_per_source: int | None, seed: int, latest_subsets: Sequence[str]) -> np.ndarray:
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


def fraction_alerts(train: pd.DataFrame, fraction: float, seed: int) -> set[int]:
    """A nested sample of train alerts (by alert_id): ``fraction`` of each subset's alerts (at least one)."""
    chosen: set[int] = set()
    for subset, group in train.groupby("source_set", sort=True):
        ids = np.sort(group["alert_id"].to_numpy())
        order = _rng(seed, "fraction-alerts", str(subset)).permutation(len(ids))
        n = max(1, math.ceil(fraction * len(ids) - 1e-9))
        chosen.update(ids[order[:n]].tolist())
    return chosen


#: Columns of alerts.parquet that the split tables read.
SPLIT_COLUMNS = ("alert_id", "objectId", "source_set", "jd", "split")


def _capped(alerts: pd.DataFrame, cfg: SplitSettings) -> tuple[np.ndarray, pd.DataFrame]:
    """(the cap's keep mask, the alerts it keeps) of ``alerts`` with a fresh index."""
    keep = cap_mask(alerts, cfg.max_alerts_per_source, cfg.seed, cfg.latest_subsets)
    return keep, alerts[keep]


def in_fraction(alerts: pd.DataFrame, part: pd.DataFrame, fraction: float, cfg: SplitSettings | Mapping) -> pd.Series:
    """Which of ``alerts`` are in the ``fraction`` (0-1) sample drawn from ``part`` (capped alerts of one
    split): its sources (``fraction_sampling: sources``, BTSbot's) or its alerts (``alerts``)."""
    cfg = SplitSettings.from_block(cfg)
    if cfg.fraction_sampling == "alerts":
        return alerts["alert_id"].isin(fraction_alerts(part, fraction, cfg.seed))
    return alerts["objectId"].isin(fraction_sources(part, fraction, cfg.seed))


def split_table(alerts: pd.DataFrame, fraction_percent: float, cfg: SplitSettings | Mapping) -> pd.DataFrame:
    """The rows one training run uses: columns alert_id, row (into images.npy), split.

    ``cfg`` is the ``splits`` block of the config (seed, max_alerts_per_source, latest_subsets,
    fraction_sampling, fraction_eval; left-out keys take the schema's defaults).
    """
    cfg = SplitSettings.from_block(cfg)
    alerts = alerts.reset_index(drop=True)
    keep, capped = _capped(alerts, cfg)
    fraction = fraction_percent / 100.0
    chosen = in_fraction(alerts, capped[capped["split"] == "train"], fraction, cfg)
    sampled = alerts["split"] == "train"
    if cfg.fraction_eval == "sampled":  # BTSbot's subsample_data: val and test sources too
        for split in ("val", "test"):
            part = capped[capped["split"] == split]
            chosen |= alerts["objectId"].isin(fraction_sources(part, fraction, cfg.seed))
        sampled = pd.Series(True, index=alerts.index)
    use = keep & (~sampled | chosen).to_numpy()
    out = pd.DataFrame(
        {
            "alert_id": alerts["alert_id"].to_numpy()[use],
            "row": np.flatnonzero(use).astype(np.int64),
            "split": alerts["split"].to_numpy()[use],
        }
    )
    return out


class SplitError(ValueError):
    """A split that cannot give the study's numbers (an evaluation split with one class)."""


def check_eval_classes(
    table: pd.DataFrame, labels: np.ndarray, origin: str, splits: Sequence[str] = ("val", "test")
) -> None:
    """Val (early stopping, sweeps) and test (ROC AUC, the policies) each need both classes; raise
    :class:`SplitError` naming the split and its counts otherwise."""
    for split in splits:
        y = np.asarray(labels)[table.loc[table["split"] == split, "row"].to_numpy()]
        classes = np.unique(y)
        if len(classes) < 2:
            what = "no alert" if len(y) == 0 else f"{len(y)} alert(s), all of label {int(classes[0])}"
            raise SplitError(
                f"{origin}: the {split} split holds {what}; its ROC AUC is undefined. Give the "
                f"dataset more sources of both classes, or a larger {split} share in "
                f"splits.probabilities"
            )


def train_alert_counts(
    alerts: pd.DataFrame, fractions_percent: Sequence[float], cfg: SplitSettings | Mapping
) -> dict[float, int]:
    """Training alerts of a run at each fraction: the train rows :func:`split_table` selects (the cap
    computed once). ``alerts`` needs the columns of :data:`SPLIT_COLUMNS`."""
    cfg = SplitSettings.from_block(cfg)
    _, capped = _capped(alerts.reset_index(drop=True), cfg)
    train = capped[capped["split"] == "train"]
    return {float(f): int(in_fraction(train, train, float(f) / 100.0, cfg).sum()) for f in fractions_percent}
