"""Build the synthetic ZTF dataset: scenes -> alerts -> cuts and features -> triplets -> contract."""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any, Mapping

import numpy as np
import pandas as pd
from tqdm import tqdm

from alertvision.data.contract import (
    IMAGES_FILE,
    ImageArrayWriter,
    alert_ids,
    building_dataset,
    config_digest,
    write_alerts,
    write_manifest,
)
from alertvision.data.features import BTSBOT_CUTS, Cuts, derive_source_features
from alertvision.data.splits import assign_source_splits
from alertvision.data.triplet import StampError, normalize_triplet
from alertvision.synthetic.observe import observe
from alertvision.synthetic.scene import draw_scenes

log = logging.getLogger(__name__)
GENERATOR_VERSION = "1"


def synthetic_scenes(cfg: Mapping[str, Any]):
    """The scenes of the synthetic dataset described by the ``data.synthetic`` config block."""
    return draw_scenes(
        cfg["n_sources"], dict(cfg["subset_fractions"]), cfg["seed"], cfg["season_days"], cfg["star_density"]
    )


def build_synthetic_ztf(
    cfg: Mapping[str, Any],
    splits_cfg: Mapping[str, Any],
    out_dir: str | os.PathLike,
    progress: bool = True,
    cuts: Cuts = BTSBOT_CUTS,
    masked_pixels: str = "drop",
) -> dict:
    """Write the synthetic ZTF dataset (alerts.parquet, images.npy, manifest.json) to ``out_dir``.

    ``cfg`` is ``data.synthetic``, ``splits_cfg`` is ``splits``, ``cuts`` is ``data.cuts`` (an alert cut is
    counted under its reason), ``masked_pixels`` is ``data.masked_pixels``. Returns the manifest.
    """
    with building_dataset(out_dir) as build:
        scenes = synthetic_scenes(cfg)
        rows: list[pd.DataFrame] = []
        skipped: Counter = Counter()
        n_issued = 0
        with ImageArrayWriter(build / IMAGES_FILE) as writer:
            for scene in tqdm(scenes, desc="synthetic ZTF sources", unit="src", disable=not progress, mininterval=2):
                alert_rows, stamps = observe(scene, cfg["cadence_days"], cfg["nan_patch_rate"], cfg["edge_rate"])
                if not alert_rows:
                    skipped["source_never_detected"] += 1
                    continue
                df = derive_source_features(pd.DataFrame(alert_rows))
                # ZTF-like candid: time of the exposure, then a running alert number (unique here)
                df["candid"] = [
                    int(round((jd - 2400000.5) * 1e4)) * 10**8 + n_issued + k for k, jd in enumerate(df["jd"])
                ]
                n_issued += len(df)
                keep = cuts.mask(df).to_numpy()
                for i in np.flatnonzero(~keep):
                    row = df.iloc[i]
                    why = cuts.reason(row["isdiffpos"], row["fid"], row["sgscore1"], row["sgscore2"], row["programid"])
                    skipped[why] += 1
                images, kept = [], []
                for i in np.flatnonzero(keep):
                    try:
                        images.append(normalize_triplet(*stamps[i], masked_pixels=masked_pixels))
                    except StampError as exc:
                        skipped[f"stamp_{exc.reason}"] += 1
                        continue
                    kept.append(i)
                if kept:
                    writer.append(np.stack(images))
                    rows.append(df.iloc[kept])
        alerts = pd.concat(rows, ignore_index=True)
        alerts.insert(0, "alert_id", alert_ids(alerts["objectId"], alerts["jd"], alerts["fid"]))
        alerts["split"] = assign_source_splits(alerts, splits_cfg["probabilities"], splits_cfg["seed"])
        alerts = write_alerts(build, alerts)
        manifest = write_manifest(
            build,
            alerts,
            dataset="ztf",
            source="synthetic",
            synthetic=True,
            # the synthetic Rubin sky's settings (data.synthetic.lsst) change nothing here
            digest=config_digest({k: v for k, v in cfg.items() if k != "lsst"}, splits_cfg, cuts.spec()),
            extra={
                "generator_version": GENERATOR_VERSION,
                "n_scenes": len(scenes),
                "masked_pixels": masked_pixels,
                "skipped": dict(sorted(skipped.items())),
                "cuts": cuts.spec(),
                "notes": [
                    "new_drb is the simulated alert's drb: no braai model is run on synthetic stamps.",
                    "sim_kind and sim_peak_mag are simulation truth, not model inputs.",
                ],
            },
        )
    log.info(
        "wrote %d synthetic alerts of %d sources to %s (skipped: %s)",
        len(alerts),
        alerts["objectId"].nunique(),
        out_dir,
        dict(skipped),
    )
    return manifest
