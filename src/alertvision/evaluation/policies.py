"""BTSbot's spectroscopic follow-up trigger policies and their per-source metrics.

A policy is evaluated per source (``objectId``) over its alerts in time order (``jd``); it fires at the first alert
where its condition holds over the source's alerts up to and including that one:

* ``bts_p1``: at least 2 alerts so far with score > 0.5 and magpsf < 19;
* ``bts_p2``: as ``bts_p1``, once the source has been seen at magpsf <= 18.5;
* ``prod_p1``: at least 1 alert so far with score > 0.85 and magpsf < 19;
* ``prod_p2``: as ``prod_p1``, once the source has been seen at magpsf <= 18.5.

BTSbot's validation code (``val.py``) names ``prod_p1`` and ``prod_p2`` its production triggers
(:attr:`Policy.production`); ``bts_p1`` and ``bts_p2`` need two alerts with score > 0.5.

Sources with fewer than 2 alerts, positive sources (``label == 1``) never brighter than 18.5 mag, and the sources of
an exclusion list (BTSbot leaves out its RCFJunk sources; ``policies.exclude_sources``) are left out of every count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable

import numpy as np
import pandas as pd

#: Columns ``source_decisions`` needs.
REQUIRED_COLUMNS = ("objectId", "jd", "label", "score", "magpsf")
#: Sources with fewer alerts than this are left out.
MIN_SOURCE_ALERTS = 2
#: Positive sources whose peak (minimum) magpsf is fainter than this are left out.
FAINT_TRUE_LIMIT = 18.5
EXCLUDED_FEW = "fewer than 2 alerts"
EXCLUDED_FAINT = "true fainter than 18.5"
EXCLUDED_LISTED = "on the exclusion list"


@dataclass(frozen=True)
class Policy:
    """A follow-up trigger: ``min_alerts`` alerts with score > ``score_threshold`` and magpsf < ``mag_limit``,
    and (when ``peak_limit`` is set) a magpsf <= ``peak_limit`` seen so far. ``production``: one of
    BTSbot's production triggers."""

    name: str
    min_alerts: int
    score_threshold: float
    mag_limit: float = 19.0
    peak_limit: float | None = None
    production: bool = False

    def describe(self) -> str:
        """The condition in words, e.g. '>= 2 alerts with score > 0.5 and magpsf < 19'."""
        text = (
            f">= {self.min_alerts} alert{'s' if self.min_alerts > 1 else ''} with score > {self.score_threshold:g} "
            f"and magpsf < {self.mag_limit:g}"
        )
        if self.peak_limit is not None:
            text += f", source seen at magpsf <= {self.peak_limit:g}"
        return text


POLICIES: dict[str, Policy] = {
    "bts_p1": Policy("bts_p1", min_alerts=2, score_threshold=0.5),
    "bts_p2": Policy("bts_p2", min_alerts=2, score_threshold=0.5, peak_limit=18.5),
    "prod_p1": Policy("prod_p1", min_alerts=1, score_threshold=0.85, production=True),
    "prod_p2": Policy("prod_p2", min_alerts=1, score_threshold=0.85, peak_limit=18.5, production=True),
}

#: Edges of the peak-magnitude bins for completeness, as BTSbot's: 17.0, 17.25, ..., 18.5 (6 bins, each
#: [lo, hi) but the last [18.25, 18.5], as numpy's histogram: a true peaking at 18.5 is counted).
PEAK_MAG_BINS: np.ndarray = np.round(np.linspace(17.0, 18.5, 7), 2)


def _resolve(policy: Policy | str) -> Policy:
    """The Policy itself, or the one named in POLICIES."""
    if isinstance(policy, Policy):
        return policy
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
    return POLICIES[policy]


def _fires(scores: np.ndarray, mags: np.ndarray, starts: np.ndarray, codes: np.ndarray, policy: Policy) -> np.ndarray:
    """Per alert, whether the policy's condition holds over its source's alerts so far.

    Alerts are grouped contiguously and in time order; ``starts`` are the groups' first rows and ``codes`` each
    row's group number (0, 1, ... in row order). Running counts are cumulative sums restarted at each group.
    """
    good = (scores > policy.score_threshold) & (mags < policy.mag_limit)
    cond = _running_count(good, starts, codes) >= policy.min_alerts
    if policy.peak_limit is not None:
        # "min magpsf so far <= peak_limit" is "at least one alert so far at <= peak_limit": exact, no float offsets
        cond &= _running_count(mags <= policy.peak_limit, starts, codes) >= 1
    return cond


def _running_count(flags: np.ndarray, starts: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Per row, how many rows of its group up to and including it have the flag set."""
    cs = np.cumsum(flags, dtype=np.int64)
    if len(cs) == 0:
        return cs
    before = cs[starts] - flags[starts]
    return cs - before[codes]


def trigger_index(scores: np.ndarray, mags: np.ndarray, policy: Policy | str) -> int | None:
    """Index of the first alert (arrays in time order) at which the policy fires, or None if it never does."""
    policy = _resolve(policy)
    scores = np.asarray(scores, dtype=float)
    mags = np.asarray(mags, dtype=float)
    if scores.shape != mags.shape or scores.ndim != 1:
        raise ValueError(f"scores and mags must be 1-d of the same length, got {scores.shape} and {mags.shape}")
    if len(scores) == 0:
        return None
    fired = np.flatnonzero(_fires(scores, mags, np.array([0]), np.zeros(len(scores), dtype=np.int64), policy))
    return int(fired[0]) if len(fired) else None


def _check(predictions: pd.DataFrame) -> None:
    """Raise ValueError for missing required columns or NaN in jd, label, score or magpsf."""
    missing = [c for c in REQUIRED_COLUMNS if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions lack column(s): {', '.join(missing)}")
    for col in ("score", "magpsf", "jd", "label"):
        bad = predictions[col].isna().to_numpy()
        if bad.any():
            oid = predictions["objectId"].to_numpy()[np.argmax(bad)]
            raise ValueError(f"column {col!r} has {int(bad.sum())} NaN value(s), e.g. for objectId {oid!r}")


def read_exclusion_list(path: str | os.PathLike) -> set[str]:
    """The objectIds of an exclusion list (BTSbot leaves out the RCFJunk sources): a CSV with an objectId
    (or ZTFID) column, or a text file with one objectId per line (blank lines and # comments ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exclusion list {path} not found (config key policies.exclude_sources)")
    text = path.read_text()
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    if path.suffix.lower() == ".csv" or "," in first:
        table = pd.read_csv(path, dtype=str)
        column = next((c for c in ("objectId", "ZTFID") if c in table.columns), None)
        if column is None:
            raise ValueError(
                f"exclusion list {path} has no objectId or ZTFID column; columns: {', '.join(table.columns)}"
            )
        return {str(v).strip() for v in table[column].dropna() if str(v).strip()}
    return {line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()}


def source_decisions(predictions: pd.DataFrame, policy: Policy | str, exclude: Collection[str] = ()) -> pd.DataFrame:
    """One row per source (sorted by objectId): its label, alert count, peak magnitude, first jd, whether and when
    the policy triggers, and whether it is included in the counts (``excluded`` says why not).

    Alerts of a source with equal jd keep their input order.
    """
    policy = _resolve(policy)
    _check(predictions)
    codes_u, uniques = pd.factorize(predictions["objectId"], sort=True)
    jd_u = predictions["jd"].to_numpy(dtype=float)
    order = np.lexsort((jd_u, codes_u))  # stable: by source, then jd, then input order
    codes = codes_u[order].astype(np.int64)
    jd = jd_u[order]
    scores = predictions["score"].to_numpy(dtype=float)[order]
    mags = predictions["magpsf"].to_numpy(dtype=float)[order]
    labels = predictions["label"].to_numpy(dtype=float)[order]

    n = len(codes)
    n_src = len(uniques)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if n else np.zeros(0, dtype=np.int64)
    n_alerts = np.diff(np.r_[starts, n])
    if n:
        lab_min = np.minimum.reduceat(labels, starts)
        lab_max = np.maximum.reduceat(labels, starts)
        if (lab_min != lab_max).any():
            oid = uniques[np.argmax(lab_min != lab_max)]
            raise ValueError(f"column 'label' varies within a source, e.g. objectId {oid!r}")
        peak = np.minimum.reduceat(mags, starts)
    else:
        lab_min = peak = np.zeros(0)
    first_jd = jd[starts]

    fired = np.flatnonzero(_fires(scores, mags, starts, codes, policy))
    trig_row = np.full(n_src, -1, dtype=np.int64)
    if len(fired):
        fired_src = codes[fired]
        first = np.r_[True, fired_src[1:] != fired_src[:-1]]
        trig_row[fired_src[first]] = fired[first]
    triggered = trig_row >= 0
    trigger_jd = np.where(triggered, jd[np.maximum(trig_row, 0)] if n else np.zeros(0), np.nan)

    label = (lab_min == 1).astype(int)
    excluded = np.full(n_src, "", dtype=object)
    excluded[(label == 1) & (peak > FAINT_TRUE_LIMIT)] = EXCLUDED_FAINT
    excluded[n_alerts < MIN_SOURCE_ALERTS] = EXCLUDED_FEW
    if exclude:
        excluded[np.isin(np.asarray(uniques, dtype=object), list(exclude))] = EXCLUDED_LISTED
    return pd.DataFrame(
        {
            "objectId": np.asarray(uniques),
            "label": label,
            "n_alerts": n_alerts.astype(int),
            "peak_mag": peak,
            "first_jd": first_jd,
            "triggered": triggered,
            "trigger_jd": trigger_jd,
            "trigger_delay_days": trigger_jd - first_jd,
            "included": excluded == "",
            "excluded": excluded.astype(str),
        }
    )


def _ratio(num: int, den: int) -> float:
    """num / den as a float, NaN when den is 0."""
    return float(num) / den if den else float("nan")


def completeness_by_peak_mag(decisions: pd.DataFrame, bins: np.ndarray = PEAK_MAG_BINS) -> list[dict]:
    """Per [lo, hi) peak-magnitude bin, the included trues, how many were triggered, and their fraction."""
    trues = decisions[decisions["included"] & (decisions["label"] == 1)]
    peak = trues["peak_mag"].to_numpy(dtype=float)
    trig = trues["triggered"].to_numpy(dtype=bool)
    out = []
    for lo, hi in zip(bins[:-1], bins[1:], strict=True):
        sel = (peak >= lo) & ((peak < hi) | ((hi == bins[-1]) & (peak == hi)))
        n_trues, n_trig = int(sel.sum()), int(trig[sel].sum())
        out.append(
            {
                "lo": float(lo),
                "hi": float(hi),
                "n_trues": n_trues,
                "n_triggered": n_trig,
                "completeness": _ratio(n_trig, n_trues),
            }
        )
    return out


def policy_metrics(predictions: pd.DataFrame, policy: Policy | str, exclude: Collection[str] = ()) -> dict:
    """Completeness, purity, F1, trigger delay and completeness by peak magnitude of one policy over the sources."""
    policy = _resolve(policy)
    dec = source_decisions(predictions, policy, exclude)
    inc = dec[dec["included"]]
    pos = inc["label"].to_numpy() == 1
    trig = inc["triggered"].to_numpy(dtype=bool)
    tp = int((pos & trig).sum())
    fp = int((~pos & trig).sum())
    fn = int((pos & ~trig).sum())
    tn = int((~pos & ~trig).sum())
    delays = inc["trigger_delay_days"].to_numpy(dtype=float)[pos & trig]
    return {
        "policy": policy.name,
        "n_sources": int(len(dec)),
        "n_included": int(len(inc)),
        "n_excluded_few_alerts": int((dec["excluded"] == EXCLUDED_FEW).sum()),
        "n_excluded_faint_trues": int((dec["excluded"] == EXCLUDED_FAINT).sum()),
        "n_excluded_listed": int((dec["excluded"] == EXCLUDED_LISTED).sum()),
        "n_trues": int(pos.sum()),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "completeness": _ratio(tp, tp + fn),
        "purity": _ratio(tp, tp + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "trigger_delay_days_median": float(np.median(delays)) if len(delays) else float("nan"),
        "trigger_delay_days_mean": float(np.mean(delays)) if len(delays) else float("nan"),
        "n_triggered_trues": int(len(delays)),
        "completeness_by_peak_mag": completeness_by_peak_mag(dec),
    }


def evaluate_policies(
    predictions: pd.DataFrame, names: Iterable[str] = tuple(POLICIES), exclude: Collection[str] = ()
) -> dict[str, dict]:
    """policy_metrics for each named policy, keyed by name, the sources in ``exclude`` left out; an
    unknown name raises ValueError."""
    names = list(names)
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policy name(s) {', '.join(map(repr, unknown))}; known: {', '.join(POLICIES)}")
    return {name: policy_metrics(predictions, name, exclude) for name in names}
