"""One function per pipeline step; the CLI and the Snakemake scripts both call these."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from alertvision.atomic import write_json, write_parquet
from alertvision.contract import ALERTS_FILE

log = logging.getLogger(__name__)


def split(dataset_dir: str | os.PathLike, fraction: float, splits_cfg: Mapping[str, Any],
          out: str | os.PathLike) -> pd.DataFrame:
    """Write the split table of one training fraction (alert_id, row, split)."""
    from alertvision.splits import split_table

    alerts = pd.read_parquet(Path(dataset_dir) / ALERTS_FILE, columns=["alert_id", "objectId", "jd", "source_set", "split"])
    table = split_table(alerts, float(fraction), splits_cfg)
    write_parquet(out, table)
    counts = table["split"].value_counts().to_dict()
    log.info("fraction %s%%: %s alerts per split", fraction, counts)
    return table


def resolve_weights(weight_id: str, weights_cfg: Mapping[str, Any], out: str | os.PathLike) -> dict:
    """Resolve a weight id (see :mod:`alertvision.models.weights`) and record where its files are."""
    from alertvision.models.weights import resolve_weights as resolve

    resolved = resolve(weight_id, weights_cfg.get("local_dirs"), weights_cfg.get("cache_dir"),
                       endpoint=weights_cfg.get("endpoint"))
    log.info("weights %s: %s (%s, via %s)", weight_id, resolved.folder, resolved.architecture, resolved.via)
    write_json(out, resolved.to_json())
    return resolved.to_json()


def train(dataset_dir: str | os.PathLike, split_file: str | os.PathLike, run_dir: str | os.PathLike, *,
          arch_cfg: Mapping[str, Any], training: Mapping[str, Any], seed: int,
          weights_json: str | os.PathLike | None, run_info: Mapping[str, Any], progress: bool = True) -> dict:
    """Train one grid cell; ``weights_json`` is the output of :func:`resolve_weights` (None: random init)."""
    from alertvision.models.weights import ResolvedWeights
    from alertvision.training.loop import train_run

    weights = None
    if weights_json is not None:
        weights = ResolvedWeights.from_json(json.loads(Path(weights_json).read_text()))
    return train_run(dataset_dir, split_file, run_dir, arch_cfg=arch_cfg, training=training, seed=int(seed),
                     weights=weights, run_info=run_info, progress=progress)


def aggregate(metric_files: Iterable[str | os.PathLike], out_csv: str | os.PathLike) -> pd.DataFrame:
    """Aggregate runs into ``roc_auc.csv``."""
    from alertvision.aggregate import write_roc_auc_table

    return write_roc_auc_table(metric_files, out_csv)


def figure2(table_csv: str | os.PathLike, out_pdf: str | os.PathLike) -> None:
    """Draw Figure 2 from ``roc_auc.csv``."""
    from alertvision.figures import figure2 as draw

    draw(pd.read_csv(table_csv), out_pdf)
