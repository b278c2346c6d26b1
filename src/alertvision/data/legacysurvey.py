"""Legacy Survey images of alert positions: the viewer's two products, coverage, normalisation, dataset.

``legacysurvey.product`` picks what a source's image is made from:

- ``fits``: the viewer's cube (bands, 252, 252) float32 nanomaggies at 0.25"/px, FITS row 0 to the
  south. 4x4 blocks are summed into 63x63 at 1"/px (flux is conserved), rows are flipped (north up,
  east left) and the bands are stored in the order of ``legacysurvey.channels`` (default z, r, g:
  red, green, blue as the paper's colour images).
- ``jpeg``: the viewer's colour JPEG, as the paper (BTSbot) used it: 63x63 at 1"/px, row 0 north and
  east left already (no flip), red, green, blue = z, r, g, raw 0-255. Stored as (R, G, B, 63, 63).

The image is then scaled per channel (``legacysurvey.normalise``). One image per source: the sky
does not change between a source's alerts.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from alertvision.data.contract import (
    IMAGE_SIZE,
    IMAGES_FILE,
    ImageArrayWriter,
    building_dataset,
    config_digest,
    open_dataset,
    write_alerts,
    write_manifest,
)

log = logging.getLogger(__name__)

#: The band order of the viewer's FITS cube (what a provider returns for ``product: fits``).
BANDS = ("g", "r", "z")
#: The stored channel order by default: red, green, blue = z, r, g, as the paper's colour images.
RGB_BANDS = ("z", "r", "g")
FETCH_PIXSCALE = 0.25  # arcsec / px
BIN = 4
FETCH_SIZE = IMAGE_SIZE * BIN  # 252 px
JPEG_PIXSCALE = 1.0  # arcsec / px: the JPEG comes at the image size, as BTSbot asks for it
JPEG_SIZE = IMAGE_SIZE
#: The channels of a JPEG image as the manifest names them: colour = band.
JPEG_CHANNELS = tuple(f"{colour}={band}" for colour, band in zip("RGB", RGB_BANDS))
PRODUCTS = ("jpeg", "fits")
NORMALISATIONS = ("l2", "none")

#: A provider returns the raw answer of a source (``fits``: the cube (bands, 252, 252); ``jpeg``: the
#: RGB array (63, 63, 3)), or None without coverage; it raises :class:`CutoutUnavailable` where the
#: answer could not be had (the source is dropped).
CubeProvider = Callable[[str, float, float], "np.ndarray | None"]


class CutoutUnavailable(RuntimeError):
    """A source whose cutout could not be had (say, still failing after the retries)."""


def source_positions(alerts: Any) -> Any:
    """One position per source (objectId, ra, dec): the median of its alerts' positions."""
    return alerts.groupby("objectId", sort=False).agg(ra=("ra", "median"), dec=("dec", "median")).reset_index()


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
    """Why a FITS image does not count as covered ('all_zero_band', 'partial'), or None if it does."""
    zf = zero_fraction(image)
    if (zf >= 1.0).any():
        return "all_zero_band"
    if (zf > max_zero_fraction).any():
        return "partial"
    return None


def blank_fraction(image: np.ndarray, blank_value: float) -> float:
    """Fraction of pixels whose every channel equals ``blank_value`` (the viewer's JPEG fill where
    there is no coverage)."""
    return float((np.asarray(image) == blank_value).all(axis=0).mean())


def blank_coverage_problem(image: np.ndarray, blank_value: float, max_blank_fraction: float) -> str | None:
    """Why a JPEG image does not count as covered ('blank': every pixel blank; 'partial': more than
    ``max_blank_fraction`` blank pixels), or None if it does."""
    fraction = blank_fraction(image, blank_value)
    if fraction >= 1.0:
        return "blank"
    if fraction > max_blank_fraction:
        return "partial"
    return None


def normalise(image: np.ndarray, method: str = "l2") -> np.ndarray:
    """Per-channel scaling: 'l2' divides each channel by its L2 norm (as the ZTF cutouts); 'none' keeps
    the raw values (nanomaggies for FITS, 0-255 for JPEG)."""
    image = np.nan_to_num(np.asarray(image, dtype=np.float64))
    if method == "l2":
        norms = np.linalg.norm(image.reshape(image.shape[0], -1), axis=1)
        norms[norms == 0] = 1.0
        return (image / norms[:, None, None]).astype(np.float32)
    if method == "none":
        return image.astype(np.float32)
    raise ValueError(f"unknown normalisation {method!r}; choose one of {NORMALISATIONS}")


def cube_to_image(cube: np.ndarray) -> np.ndarray:
    """A raw viewer cube (3, 252, 252), FITS row order -> (3, 63, 63) at 1"/px, north up, unnormalised,
    in the cube's band order (g, r, z)."""
    cube = np.asarray(cube, dtype=np.float32)
    if cube.shape != (len(BANDS), FETCH_SIZE, FETCH_SIZE):
        raise ValueError(f"expected a ({len(BANDS)}, {FETCH_SIZE}, {FETCH_SIZE}) cube, got {cube.shape}")
    return bin_cutout(north_up(cube))


def jpeg_to_image(rgb: np.ndarray) -> np.ndarray:
    """A decoded viewer JPEG (63, 63, 3) RGB, row 0 north, east left -> (3, 63, 63) float32 in the
    order R, G, B with the raw 0-255 values (no flip: the JPEG is drawn north up already)."""
    rgb = np.asarray(rgb)
    if rgb.shape != (JPEG_SIZE, JPEG_SIZE, 3):
        raise ValueError(f"expected a ({JPEG_SIZE}, {JPEG_SIZE}, 3) RGB image, got {rgb.shape}")
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)


def rgb_indices(channels: Sequence[str]) -> list[int]:
    """The indices of the z, r and g channels (red, green, blue) of an image whose channels are
    labelled as in an ``ls`` manifest: a band ('z') or colour=band ('R=z')."""
    bands = [str(c).split("=")[-1].strip().lower() for c in channels]
    return [bands.index(b) for b in RGB_BANDS]


@dataclass(frozen=True)
class FitsProduct:
    """``product: fits``: a viewer cube -> binned, north-up image in the configured channel order."""

    channels: tuple[str, ...]
    max_zero_fraction: float
    name: ClassVar[str] = "fits"
    pixel_scale: ClassVar[float] = FETCH_PIXSCALE * BIN

    def to_image(self, cube: np.ndarray) -> np.ndarray:
        """(3, 63, 63) float32, unnormalised, bands in :attr:`channels` order."""
        return cube_to_image(cube)[[BANDS.index(b) for b in self.channels]]

    def coverage_problem(self, image: np.ndarray) -> str | None:
        """See :func:`coverage_problem`."""
        return coverage_problem(image, self.max_zero_fraction)

    def labels(self) -> list[str]:
        """The stored channels, for the manifest."""
        return list(self.channels)


@dataclass(frozen=True)
class JpegProduct:
    """``product: jpeg``: a decoded viewer JPEG -> (R, G, B) image with the raw 0-255 values."""

    blank_value: int
    max_zero_fraction: float
    name: ClassVar[str] = "jpeg"
    pixel_scale: ClassVar[float] = JPEG_PIXSCALE

    def to_image(self, rgb: np.ndarray) -> np.ndarray:
        """See :func:`jpeg_to_image`."""
        return jpeg_to_image(rgb)

    def coverage_problem(self, image: np.ndarray) -> str | None:
        """See :func:`blank_coverage_problem`."""
        return blank_coverage_problem(image, self.blank_value, self.max_zero_fraction)

    def labels(self) -> list[str]:
        """The stored channels as colour=band, for the manifest."""
        return list(JPEG_CHANNELS)


ImageProduct = FitsProduct | JpegProduct


def image_product(cfg: Mapping[str, Any]) -> ImageProduct:
    """The image product of a ``legacysurvey`` config block (``product``, ``channels``, ...)."""
    if cfg["product"] == "jpeg":
        return JpegProduct(int(cfg["jpeg_blank_value"]), float(cfg["max_zero_fraction"]))
    if cfg["product"] == "fits":
        return FitsProduct(tuple(cfg["channels"]), float(cfg["max_zero_fraction"]))
    raise ValueError(f"unknown legacysurvey.product {cfg['product']!r}; choose one of {PRODUCTS}")


def build_ls_dataset(
    ztf_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    provider: CubeProvider,
    cfg: Mapping[str, Any],
    *,
    source: str,
    synthetic: bool,
    digest_blocks: tuple = (),
    extra: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict:
    """Pair every alert of the ZTF dataset with its source's Legacy Survey image.

    ``provider`` answers the raw product (see :data:`CubeProvider`); ``cfg`` is the ``legacysurvey``
    block, whose ``product`` says how it becomes an image (:func:`image_product`). Sources without
    coverage (no image; for FITS an all-zero band or more zeros than ``cfg['max_zero_fraction']`` in a
    band; for JPEG a blank image or more blank pixels than that) are dropped with their alerts and
    counted in the manifest. The alerts keep their ZTF rows (columns and split). Each covered source's image is written
    once per alert, so that ``images.npy[i]`` describes ``alerts.parquet`` row i. A source whose
    answer the provider could not get (:class:`CutoutUnavailable`) is dropped and counted as failed.
    """
    product = image_product(cfg)
    ztf = open_dataset(ztf_dir)
    alerts = ztf.alerts
    with building_dataset(out_dir) as build:
        sources = source_positions(alerts).set_index("objectId")
        status: Counter = Counter()
        keep_rows: list[np.ndarray] = []
        rows_of = alerts.groupby("objectId", sort=False).indices
        with ImageArrayWriter(build / IMAGES_FILE) as writer:
            for object_id, pos in tqdm(
                sources.iterrows(),
                total=len(sources),
                desc="Legacy Survey sources",
                unit="src",
                disable=not progress,
                mininterval=2,
            ):
                try:
                    raw = provider(str(object_id), float(pos["ra"]), float(pos["dec"]))
                except CutoutUnavailable:
                    status["failed"] += 1
                    continue
                if raw is None:
                    status["uncovered_no_overlap"] += 1
                    continue
                image = product.to_image(raw)
                problem = product.coverage_problem(image)
                if problem:
                    status[f"uncovered_{problem}"] += 1
                    continue
                status["covered"] += 1
                image = normalise(image, cfg["normalise"])
                idx = np.sort(rows_of[object_id])
                writer.append(np.repeat(image[None], len(idx), axis=0))
                keep_rows.append(idx)
        kept = np.concatenate(keep_rows) if keep_rows else np.empty(0, dtype=int)
        ls_alerts = write_alerts(build, alerts.iloc[kept])
        n_uncovered = sum(v for k, v in status.items() if k.startswith("uncovered"))
        manifest = write_manifest(
            build,
            ls_alerts,
            dataset="ls",
            source=source,
            synthetic=synthetic,
            digest=config_digest(cfg, *digest_blocks),
            extra={
                "ztf_manifest_digest": ztf.manifest.get("config_digest"),
                "product": product.name,
                "channels": product.labels(),
                "pixel_scale_arcsec": product.pixel_scale,
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
    log.info(
        "Legacy Survey dataset: %d of %d sources covered, %d alerts", status["covered"], len(sources), len(ls_alerts)
    )
    return manifest
