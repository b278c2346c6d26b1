"""The latent space: 2-D UMAP of a run's embeddings and Isolation-Forest outliers per subset.

UMAP (umap-learn) is seeded through ``random_state``, which makes it deterministic and, as
umap-learn does then, single-threaded. The Isolation Forest (scikit-learn, seeded) is fitted on
the 2-D UMAP coordinates of each subset (trues, dims, vars, rejects, ...) on its own; the
``top_fraction`` most anomalous alerts of each subset, at least one, are flagged. The alerts every
model flags (the intersection) are the candidates of the outlier report.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from typing import Any, Mapping

import numpy as np
import pandas as pd

from alertvision.atomic import write_parquet
from alertvision.evaluation.embeddings import embedding_columns, embedding_matrix

log = logging.getLogger(__name__)

UMAP_COLUMNS = ("umap_x", "umap_y")
#: The fewest points UMAP's spectral initialisation handles; fewer use a random initialisation.
MIN_SPECTRAL = 5
#: The first columns of the outlier table, in this order; per-model columns follow.
OUTLIER_ID_COLUMNS = ("objectId", "candid", "alert_id", "subset", "label")


def umap_2d(embeddings: np.ndarray, *, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0) -> np.ndarray:
    """Seeded 2-D UMAP of (n, d) embeddings -> float32 (n, 2); the same input and seed give the same output.

    ``n_neighbors`` is capped at n - 1. Fewer than three points cannot be laid out by UMAP: they
    are placed on a line (and a warning is logged).
    """
    x = np.asarray(embeddings, dtype=np.float32)
    n = len(x)
    if n < 3:
        log.warning("UMAP needs at least 3 points, got %d: placing them on a line", n)
        return np.column_stack([np.arange(n, dtype=np.float32), np.zeros(n, dtype=np.float32)])
    import umap  # deferred: umap is heavy (numba-compiled on first use: slow to import)

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=max(2, min(int(n_neighbors), n - 1)),
        min_dist=float(min_dist),
        random_state=int(seed),
        transform_seed=int(seed),
        n_jobs=1,
        init="spectral" if n >= MIN_SPECTRAL else "random",
    )
    with warnings.catch_warnings():
        # "n_jobs value 1 overridden to 1 by setting random_state": single-threaded is the point
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        coords = reducer.fit_transform(x)
    return np.asarray(coords, dtype=np.float32)


def umap_table(embeddings: pd.DataFrame, umap_cfg: Mapping[str, Any]) -> pd.DataFrame:
    """The embedding table's identifier columns with its 2-D UMAP coordinates (umap_x, umap_y)."""
    started = time.time()
    coords = umap_2d(
        embedding_matrix(embeddings),
        n_neighbors=umap_cfg["n_neighbors"],
        min_dist=umap_cfg["min_dist"],
        seed=umap_cfg["seed"],
    )
    ids = embeddings.drop(columns=embedding_columns(embeddings)).reset_index(drop=True)
    ids[UMAP_COLUMNS[0]], ids[UMAP_COLUMNS[1]] = coords[:, 0], coords[:, 1]
    log.info(
        "UMAP of %d alerts (n_neighbors %s, min_dist %s, seed %s): %.1f s, single-threaded",
        len(ids),
        umap_cfg["n_neighbors"],
        umap_cfg["min_dist"],
        umap_cfg["seed"],
        time.time() - started,
    )
    return ids


def write_umap(
    embeddings_parquet: str | os.PathLike, out: str | os.PathLike, umap_cfg: Mapping[str, Any]
) -> pd.DataFrame:
    """Read an embeddings table, lay it out in 2-D and write the coordinates table to ``out``."""
    table = umap_table(pd.read_parquet(embeddings_parquet), umap_cfg)
    write_parquet(out, table)
    return table


def isolation_scores(coords: np.ndarray, *, n_estimators: int = 200, seed: int = 0) -> np.ndarray:
    """Isolation-Forest anomaly scores of the points (higher: more anomalous, in (0, 1]; 0.5 is neutral)."""
    from sklearn.ensemble import IsolationForest  # deferred: sklearn is heavy

    coords = np.asarray(coords, dtype=np.float64)
    if len(coords) == 0:
        return np.empty(0)
    forest = IsolationForest(n_estimators=int(n_estimators), random_state=int(seed)).fit(coords)
    return -forest.score_samples(coords)


def top_count(n: int, top_fraction: float) -> int:
    """How many of ``n`` alerts are flagged: ceil(top_fraction * n), at least 1 (0 when n is 0)."""
    return 0 if n == 0 else max(1, min(n, math.ceil(float(top_fraction) * n - 1e-9)))


def rank_within(values: np.ndarray, tie_break: np.ndarray) -> np.ndarray:
    """Ranks 1..n by decreasing value; equal values are ordered by ``tie_break`` (ascending)."""
    order = np.lexsort((tie_break, -np.asarray(values, dtype=np.float64)))
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def anomaly_table(coords: pd.DataFrame, iforest_cfg: Mapping[str, Any]) -> pd.DataFrame:
    """Per alert: anomaly score, rank within its subset (1: most anomalous), subset size and flag.

    One Isolation Forest per subset (``source_set``), fitted on the subset's UMAP coordinates.
    """
    out = coords[["alert_id", "source_set"]].copy()
    out["anomaly"] = np.nan
    out["rank"] = 0
    out["n_subset"] = 0
    for idx in out.groupby("source_set", sort=True).indices.values():
        xy = coords.iloc[idx][list(UMAP_COLUMNS)].to_numpy()
        scores = isolation_scores(xy, n_estimators=iforest_cfg["n_estimators"], seed=iforest_cfg["seed"])
        out.iloc[idx, out.columns.get_loc("anomaly")] = scores
        out.iloc[idx, out.columns.get_loc("rank")] = rank_within(scores, coords["alert_id"].to_numpy()[idx])
        out.iloc[idx, out.columns.get_loc("n_subset")] = len(idx)
    k = out["n_subset"].map(lambda n: top_count(int(n), iforest_cfg["top_fraction"]))
    out["flagged"] = out["rank"] <= k
    return out


def flagged_by_all(flags: Mapping[str, set]) -> set:
    """The alert ids flagged by every model (the empty set when there is no model)."""
    sets = list(flags.values())
    return set.intersection(*map(set, sets)) if sets else set()


def flagged_by_any(flags: Mapping[str, set]) -> set:
    """The alert ids flagged by at least one model."""
    return set().union(*flags.values()) if flags else set()


def outlier_table(coords_by_model: Mapping[str, pd.DataFrame], iforest_cfg: Mapping[str, Any]) -> pd.DataFrame:
    """Every alert flagged by at least one model, with each model's anomaly score, rank, flag and
    classifier score, the number of models flagging it (``flagged_by``) and ``in_intersection``.

    Rows are sorted by ``flagged_by`` (descending), then by the mean rank across models.
    """
    if not coords_by_model:
        raise ValueError("no model to find outliers with")
    base_cols = ["alert_id", "objectId", "candid", "source_set", "label"]
    merged: pd.DataFrame | None = None
    flags: dict[str, set] = {}
    for name, coords in coords_by_model.items():
        anomalies = anomaly_table(coords, iforest_cfg)
        part = coords[base_cols].copy()
        part[f"{name}_anomaly"] = anomalies["anomaly"].to_numpy()
        part[f"{name}_rank"] = anomalies["rank"].to_numpy()
        part[f"{name}_flagged"] = anomalies["flagged"].to_numpy()
        part[f"{name}_classifier_score"] = coords["score"].to_numpy()
        flags[name] = set(part.loc[part[f"{name}_flagged"], "alert_id"])
        log.info(
            "%s: %d of %d alerts flagged (top %g per subset)",
            name,
            len(flags[name]),
            len(part),
            iforest_cfg["top_fraction"],
        )
        merged = part if merged is None else merged.merge(part, on=base_cols, how="outer")
    assert merged is not None
    flag_cols = [f"{m}_flagged" for m in coords_by_model]
    merged[flag_cols] = merged[flag_cols].astype("boolean").fillna(False).astype(bool)
    merged["flagged_by"] = merged[flag_cols].sum(axis=1).astype(int)
    merged["in_intersection"] = merged["alert_id"].isin(flagged_by_all(flags))
    merged["mean_rank"] = merged[[f"{m}_rank" for m in coords_by_model]].mean(axis=1)
    union = merged[merged["alert_id"].isin(flagged_by_any(flags))]
    union = union.sort_values(["flagged_by", "mean_rank", "alert_id"], ascending=[False, True, True])
    union = union.rename(columns={"source_set": "subset"}).drop(columns="mean_rank")
    union = union[[*OUTLIER_ID_COLUMNS, *[c for c in union.columns if c not in OUTLIER_ID_COLUMNS]]]
    log.info(
        "%d alerts flagged by at least one model, %d by all %d",
        len(union),
        int(union["in_intersection"].sum()),
        len(coords_by_model),
    )
    return union.reset_index(drop=True)
