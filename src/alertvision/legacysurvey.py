"""Legacy Survey grz images of alert positions: cutout geometry, coverage, normalisation, dataset.

The viewer returns (bands, 252, 252) float32 at 0.25"/px with FITS row 0 to the south. Every
cutout becomes a 63x63 image at 1"/px by summing 4x4 blocks (flux is conserved), oriented north
up, east left (rows flipped), then normalised per band. One image per source: the sky does not
change between a source's alerts.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any, Callable, Mapping

import numpy as np
from tqdm import tqdm

from alertvision.contract import (IMAGE_SIZE, IMAGES_FILE, ImageArrayWriter, config_digest, open_dataset,
                                  start_dataset, write_alerts, write_manifest)

log = logging.getLogger(__name__)

BANDS = ("g", "r", "z")
FETCH_PIXSCALE = 0.25  # arcsec / px
BIN = 4
FETCH_SIZE = IMAGE_SIZE * BIN  # 252 px
NORMALISATIONS = ("l2", "none")

#: A provider returns the raw FITS cube (bands, 252, 252) of a source, or None without coverage;
#: it raises :class:`CutoutUnavailable` where the cube could not be had (the source is dropped).
CubeProvider = Callable[[str, float, float], "np.ndarray | None"]


class CutoutUnavailable(RuntimeError):
    """A source whose cutout could not be had (say, still failing after the retries)."""


def source_positions(alerts: Any) -> Any:
    """One position per source (objectId, ra, dec): the median of its alerts' positions."""
    return (alerts.groupby("objectId", sort=False).agg(ra=("ra", "median"), dec=("dec", "median"))
            .reset_index())


def bin_cutout(cube: np.ndarray, factor: int = BIN) -> np.ndarray:
    """Sum ``factor`` x ``factor`` pixel blocks of a (bands, H, W) cube."""
    b, h, w = cube.shape
    if h % factor or w % factor:
        raise ValueError(f"cutout of {h}x{w} is not a multiple of {factor}")
    return cube.reshape(b, h // factor, factor, w // factor, factor).sum(axis=(2, 4))


def north_up(cube: np.ndarray) -> np.ndarray:
    """FITS row 0 is south: flip rows so that row 0 is north (east stays left)."""
    return cube[:, ::-1, :]


def zero_fraction(image: np.ndarray) -> np.ndarray:
    """Fraction of exactly-zero pixels per band (the viewer fills uncovered pixels with 0)."""
    return (image == 0).reshape(image.shape[0], -1).mean(axis=1)


def coverage_problem(image: np.ndarray, max_zero_fraction: float) -> str | None:
    """Why an image does not count as covered ('all_zero_band', 'partial'), or None if it does."""
    zf = zero_fraction(image)
    if (zf >= 1.0).any():
        return "all_zero_band"
    if (zf > max_zero_fraction).any():
        return "partial"
    return None


def normalise(image: np.ndarray, method: str = "l2") -> np.ndarray:
    """Per-band scaling: 'l2' divides each band by its L2 norm (as the ZTF cutouts); 'none' keeps nanomaggies."""
    image = np.nan_to_num(np.asarray(image, dtype=np.float64))
    if method == "l2":
        norms = np.linalg.norm(image.reshape(image.shape[0], -1), axis=1)
        norms[norms == 0] = 1.0
        return (image / norms[:, None, None]).astype(np.float32)
    if method == "none":
        return image.astype(np.float32)
    raise ValueError(f"unknown normalisation {method!r}; choose one of {NORMALISATIONS}")


def cube_to_image(cube: np.ndarray) -> np.ndarray:
    """A raw viewer cube (3, 252, 252), FITS row order -> (3, 63, 63) at 1"/px, north up, unnormalised."""
    cube = np.asarray(cube, dtype=np.float32)
    if cube.shape != (len(BANDS), FETCH_SIZE, FETCH_SIZE):
        raise ValueError(f"expected a ({len(BANDS)}, {FETCH_SIZE}, {FETCH_SIZE}) cube, got {cube.shape}")
    return bin_cutout(north_up(cube))


def build_ls_dataset(ztf_dir: str | os.PathLike, out_dir: str | os.PathLike, provider: CubeProvider,
                     cfg: Mapping[str, Any], *, source: str, synthetic: bool, digest_blocks: tuple = (),
                     extra: Mapping[str, Any] | None = None, progress: bool = True) -> dict:
    """Pair every alert of the ZTF dataset with its source's Legacy Survey image.

    Sources without coverage (no image, an all-zero band, or more zeros than
    ``cfg['max_zero_fraction']``) are dropped with their alerts and counted in the manifest.
    The alerts keep their ZTF rows (columns and split). Each covered source's image is written
    once per alert, so that ``images.npy[i]`` describes ``alerts.parquet`` row i. A source whose
    cube the provider could not get (:class:`CutoutUnavailable`) is dropped and counted as failed.
    """
    ztf = open_dataset(ztf_dir)
    alerts = ztf.alerts
    out_dir = start_dataset(out_dir)
    sources = source_positions(alerts).set_index("objectId")
    status: Counter = Counter()
    keep_rows: list[np.ndarray] = []
    rows_of = alerts.groupby("objectId", sort=False).indices
    with ImageArrayWriter(out_dir / IMAGES_FILE) as writer:
        for object_id, pos in tqdm(sources.iterrows(), total=len(sources), desc="Legacy Survey sources",
                                   unit="src", disable=not progress, mininterval=2):
            try:
                cube = provider(str(object_id), float(pos["ra"]), float(pos["dec"]))
            except CutoutUnavailable:
                status["failed"] += 1
                continue
            if cube is None:
                status["uncovered_no_overlap"] += 1
                continue
            image = cube_to_image(cube)
            problem = coverage_problem(image, cfg["max_zero_fraction"])
            if problem:
                status[f"uncovered_{problem}"] += 1
                continue
            status["covered"] += 1
            image = normalise(image, cfg["normalise"])
            idx = np.sort(rows_of[object_id])
            writer.append(np.repeat(image[None], len(idx), axis=0))
            keep_rows.append(idx)
    kept = np.concatenate(keep_rows) if keep_rows else np.empty(0, dtype=int)
    ls_alerts = write_alerts(out_dir, alerts.iloc[kept])
    n_uncovered = sum(v for k, v in status.items() if k.startswith("uncovered"))
    manifest = write_manifest(
        out_dir, ls_alerts, dataset="ls", source=source, synthetic=synthetic,
        digest=config_digest(cfg, *digest_blocks),
        extra={
            "ztf_manifest_digest": ztf.manifest.get("config_digest"),
            "bands": list(BANDS),
            "pixel_scale_arcsec": FETCH_PIXSCALE * BIN,
            "orientation": "north up, east left",
            "normalise": cfg["normalise"],
            "coverage": {
                "sources": dict(sorted(status.items())),
                "uncovered_fraction": n_uncovered / max(1, len(sources)),
                "alerts_dropped": int(len(alerts) - len(ls_alerts)),
            },
            **dict(extra or {}),
        },
    )
    log.info("Legacy Survey dataset: %d of %d sources covered, %d alerts", status["covered"], len(sources),
             len(ls_alerts))
    return manifest
