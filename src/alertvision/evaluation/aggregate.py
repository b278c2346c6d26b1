"""Aggregate per-run metrics over seeds into the study's tables."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Collection, Iterable, Iterator

import numpy as np
import pandas as pd

from alertvision.atomic import write_csv
from alertvision.evaluation.policies import evaluate_policies, read_exclusion_list, source_decisions

KEYS = ("dataset", "modality", "arch", "regimen", "fraction")
#: A run's test scores, beside its metrics.json.
PREDICTIONS_FILE = "predictions.parquet"


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


def bootstrap_draws(sources: np.ndarray, resamples: int, seed: int) -> tuple[np.ndarray, Iterator[np.ndarray]]:
    """The sorted test-source ids and ``resamples`` draws of them with replacement (each an array of indices
    into the ids). The draws depend on the number of sources and ``seed`` only, so every bootstrap of a
    test split (AUC, F1) and every run on it share them."""
    ids = np.unique(np.asarray(sources).astype(str))
    rng = np.random.default_rng(seed)
    return ids, (rng.integers(0, len(ids), len(ids)) for _ in range(int(resamples)))


def bootstrap_auc_std(labels: np.ndarray, scores: np.ndarray, sources: np.ndarray, resamples: int, seed: int) -> float:
    """Standard deviation (ddof=1) of the ROC AUC over ``resamples`` draws of the test sources with
    replacement (a drawn source brings all its alerts); draws with one class only are skipped. The draws
    are :func:`bootstrap_draws`: they depend on the sorted source ids and ``seed`` only, so runs on the
    same test split share them."""
    from scipy.stats import rankdata  # deferred: scipy is heavy

    ids, draws = bootstrap_draws(sources, resamples, seed)
    inverse = np.searchsorted(ids, np.asarray(sources).astype(str))
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(ids) + 1))
    members = [order[bounds[i] : bounds[i + 1]] for i in range(len(ids))]
    labels, scores = np.asarray(labels) == 1, np.asarray(scores, dtype=np.float64)
    aucs = []
    for drawn in draws:
        rows = np.concatenate([members[i] for i in drawn])
        y = labels[rows]
        n_pos = int(y.sum())
        if 0 < n_pos < len(y):  # the Mann-Whitney form of the ROC AUC (ties count half), as roc_auc_score
            ranks = rankdata(scores[rows])
            aucs.append((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(y) - n_pos)))
    return float(np.std(aucs, ddof=1)) if len(aucs) > 1 else float("nan")


def bootstrap_f1_std(decisions: pd.DataFrame, resamples: int, seed: int) -> float:
    """Standard deviation (ddof=1) of a trigger policy's F1 over ``resamples`` draws of the test sources with
    replacement, from its per-source ``decisions`` (:func:`~alertvision.evaluation.policies.source_decisions`:
    every test source, excluded ones counting nothing). The draws are :func:`bootstrap_draws`, the same as
    the ROC AUC's of the run; draws without a true or a trigger (F1 undefined) are skipped."""
    ids, draws = bootstrap_draws(decisions["objectId"].to_numpy(), resamples, seed)
    order = np.searchsorted(ids, decisions["objectId"].to_numpy().astype(str))
    inc = decisions["included"].to_numpy(dtype=bool)
    pos = inc & (decisions["label"].to_numpy() == 1)
    trig = inc & decisions["triggered"].to_numpy(dtype=bool)
    tp, fp, fn = np.zeros(len(ids)), np.zeros(len(ids)), np.zeros(len(ids))
    tp[order], fp[order], fn[order] = pos & trig, ~pos & trig, pos & ~trig
    f1s = []
    for drawn in draws:
        weights = np.bincount(drawn, minlength=len(ids))
        n_tp, n_fp, n_fn = weights @ tp, weights @ fp, weights @ fn
        if 2 * n_tp + n_fp + n_fn > 0:
            f1s.append(2 * n_tp / (2 * n_tp + n_fp + n_fn))
    return float(np.std(f1s, ddof=1)) if len(f1s) > 1 else float("nan")


def add_bootstrap_std(metrics: pd.DataFrame, paths: Iterable[str | os.PathLike], bootstrap: dict) -> pd.DataFrame:
    """``metrics`` (rows in the order of ``paths``) with ``test_roc_auc_bootstrap_std`` and ``n_test_sources``
    from each run's predictions.parquet beside its metrics.json."""
    stds, n_sources = [], []
    for path in paths:
        pred = pd.read_parquet(Path(path).parent / PREDICTIONS_FILE, columns=["objectId", "label", "score"])
        stds.append(
            bootstrap_auc_std(
                pred["label"].to_numpy(),
                pred["score"].to_numpy(),
                pred["objectId"].to_numpy(),
                bootstrap["resamples"],
                bootstrap["seed"],
            )
        )
        n_sources.append(pred["objectId"].nunique())
    return metrics.assign(test_roc_auc_bootstrap_std=stds, n_test_sources=n_sources)


def _std(s: pd.Series) -> float:
    """Standard deviation over seeds (ddof=1); NaN with fewer than two values."""
    return s.std(ddof=1) if s.notna().sum() > 1 else np.nan


def aggregate_roc_auc(metrics: pd.DataFrame) -> pd.DataFrame:
    """Median and standard deviation (ddof=1; empty for one seed) of test ROC AUC per configuration."""
    g = metrics.groupby(list(KEYS), sort=True)
    out = g.agg(
        n_seeds=("seed", "nunique"),
        n_train_alerts=("n_train_alerts", "median"),
        roc_auc_median=("test_roc_auc", "median"),
        roc_auc_std=("test_roc_auc", _std),
        **(
            {
                "roc_auc_bootstrap_std": ("test_roc_auc_bootstrap_std", "median"),
                "n_test_sources": ("n_test_sources", "median"),
            }
            if "test_roc_auc_bootstrap_std" in metrics
            else {}
        ),
        test_loss_median=("test_loss", "median"),
        synthetic=("synthetic", "all"),
    ).reset_index()
    out["n_train_alerts"] = out["n_train_alerts"].round().astype(int)
    if "n_test_sources" in out:
        out["n_test_sources"] = out["n_test_sources"].round().astype(int)
    return out


def write_roc_auc_table(
    metric_files: Iterable[str | os.PathLike], out_csv: str | os.PathLike, bootstrap: dict | None = None
) -> pd.DataFrame:
    """Read runs, aggregate, write ``roc_auc.csv``; returns the table. With ``bootstrap`` (the config's
    block) each run's test AUC also gets its bootstrap std over test sources, from its predictions."""
    paths = list(metric_files)
    metrics = read_metrics(paths)
    if bootstrap is not None:
        metrics = add_bootstrap_std(metrics, paths, bootstrap)
    table = aggregate_roc_auc(metrics)
    write_csv(out_csv, table)
    return table


def policy_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, policy) from the runs' ``policies`` metrics."""
    if "policies" not in metrics.columns:
        raise ValueError("metrics lack the trigger policies: score them first (score_policies)")
    rows = []
    for _, run in metrics.iterrows():
        for policy, values in (run["policies"] or {}).items():
            rows.append(
                {
                    **{k: run[k] for k in (*KEYS, "seed", "n_train_alerts", "test_roc_auc", "synthetic")},
                    "policy": policy,
                    **{k: v for k, v in values.items() if k != "completeness_by_peak_mag"},
                    "completeness_by_peak_mag": values.get("completeness_by_peak_mag") or [],
                }
            )
    if not rows:
        raise ValueError("no trigger-policy results in the metrics")
    out = pd.DataFrame(rows)
    for col in ("f1", "completeness", "purity", "trigger_delay_days_median", "f1_bootstrap_std"):
        if col in out:
            out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)  # null in JSON -> NaN
    return out


def aggregate_f1(rows: pd.DataFrame) -> pd.DataFrame:
    """Median and standard deviation over seeds of F1, completeness and purity per configuration and policy
    (and the median over seeds of each run's bootstrap std of F1, when the runs have one)."""
    g = rows.groupby([*KEYS, "policy"], sort=True)
    out = g.agg(
        n_seeds=("seed", "nunique"),
        n_train_alerts=("n_train_alerts", "median"),
        f1_median=("f1", "median"),
        f1_std=("f1", _std),
        **({"f1_bootstrap_std": ("f1_bootstrap_std", "median")} if "f1_bootstrap_std" in rows else {}),
        completeness_median=("completeness", "median"),
        completeness_std=("completeness", _std),
        purity_median=("purity", "median"),
        purity_std=("purity", _std),
        trigger_delay_days_median=("trigger_delay_days_median", "median"),
        n_sources=("n_included", "median"),
        roc_auc_median=("test_roc_auc", "median"),
        synthetic=("synthetic", "all"),
    ).reset_index()
    out["n_train_alerts"] = out["n_train_alerts"].round().astype(int)
    return out


def aggregate_peak_mag(rows: pd.DataFrame) -> pd.DataFrame:
    """Completeness per peak-magnitude bin: median and std over seeds per configuration and policy."""
    long = [
        {**{k: r[k] for k in (*KEYS, "policy", "seed")}, **b}
        for _, r in rows.iterrows()
        for b in r["completeness_by_peak_mag"]
    ]
    if not long:
        return pd.DataFrame(columns=[*KEYS, "policy", "lo", "hi", "n_trues", "completeness_median", "completeness_std"])
    frame = pd.DataFrame(long)
    frame["completeness"] = pd.to_numeric(frame["completeness"], errors="coerce").astype(float)
    g = frame.groupby([*KEYS, "policy", "lo", "hi"], sort=True)
    return g.agg(
        n_trues=("n_trues", "median"),
        completeness_median=("completeness", "median"),
        completeness_std=("completeness", _std),
    ).reset_index()


def score_policies(
    metric_files: Iterable[str | os.PathLike], exclude: Collection[str] = (), bootstrap: dict | None = None
) -> pd.DataFrame:
    """The runs' metrics with a ``policies`` column: every trigger policy scored on the run's test predictions
    (``predictions.parquet`` beside its ``metrics.json``), the sources in ``exclude`` left out; with
    ``bootstrap`` (the config's block) each policy also gets ``f1_bootstrap_std`` over the test sources."""
    paths = [Path(p) for p in metric_files]
    metrics = read_metrics(paths)
    scored = []
    for path in paths:
        predictions = pd.read_parquet(path.parent / PREDICTIONS_FILE)
        policies = evaluate_policies(predictions, exclude=exclude)
        if bootstrap is not None:
            for name, values in policies.items():
                decisions = source_decisions(predictions, name, exclude)
                values["f1_bootstrap_std"] = bootstrap_f1_std(decisions, bootstrap["resamples"], bootstrap["seed"])
        scored.append(policies)
    metrics["policies"] = scored
    return metrics


def write_f1_tables(
    metric_files: Iterable[str | os.PathLike],
    out_csv: str | os.PathLike,
    peak_mag_csv: str | os.PathLike | None = None,
    exclude_sources: str | os.PathLike | None = None,
    bootstrap: dict | None = None,
) -> pd.DataFrame:
    """Score the runs' trigger policies (see :func:`score_policies`; ``exclude_sources`` an exclusion list
    file; ``bootstrap`` the config's block, for ``f1_bootstrap_std``), aggregate them over seeds, write
    ``f1.csv`` (and the peak-magnitude table)."""
    exclude = read_exclusion_list(exclude_sources) if exclude_sources else set()
    return write_policy_tables(score_policies(metric_files, exclude, bootstrap), out_csv, peak_mag_csv)


def write_policy_tables(
    metrics: pd.DataFrame, out_csv: str | os.PathLike, peak_mag_csv: str | os.PathLike | None = None
) -> pd.DataFrame:
    """Aggregate runs whose ``policies`` are scored into ``f1.csv`` (and the peak-magnitude table)."""
    rows = policy_rows(metrics)
    table = aggregate_f1(rows)
    write_csv(out_csv, table)
    if peak_mag_csv is not None:
        write_csv(peak_mag_csv, aggregate_peak_mag(rows))
    return table
