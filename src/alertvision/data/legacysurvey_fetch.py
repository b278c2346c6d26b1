"""Legacy Survey DR10 cutouts from the viewer's cutout services: one answer per source, cached.

Two products (``legacysurvey.product``) share everything here but their endpoint, query, cache
layout and decoder (a :class:`ViewerProduct`):

- ``fits``: ``GET {url}?ra=&dec=&layer=ls-dr10&pixscale=0.25&size=252&bands=grz`` answers a FITS
  file whose primary HDU is float32 (bands, 252, 252) in the requested band order, row 0 to the
  south; cached as ``cache_dir/{layer}/{objectId}_{ra}{dec}.fits``.
- ``jpeg``: ``GET {jpeg_url}?ra=&dec=&layer=ls-dr10&size=63&pixscale=1&bands=griy`` (BTSbot's query)
  answers the viewer's colour JPEG, 63x63 RGB with z, r, g as red, green, blue, row 0 north, east
  left; cached as ``cache_dir/{layer}-jpeg-{jpeg_bands}/{objectId}_{ra}{dec}.jpg`` (``{layer}-jpeg``
  when ``jpeg_bands`` is null).

Outside the footprint the service answers an error saying there is "no overlap"; that answer is
final (not retried) and is remembered as uncovered. Partial coverage comes back as exact zeros
(FITS) or the blank value (JPEG) and is judged later (:mod:`alertvision.data.legacysurvey`).

Each answer is written to the cache atomically as soon as it has been decoded as a valid cube or
image, so a rerun fetches only what is missing and nothing half-written is ever read. 5xx answers,
timeouts and bodies that break mid-way are retried by urllib3's ``Retry``; a complete answer that
does not decode is retried under the same ``Retry`` policy. Sources that still fail are listed, and
dropped from the ``ls`` dataset.
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import urllib3
from tqdm import tqdm
from urllib3.exceptions import MaxRetryError
from urllib3.util import Retry

from alertvision.atomic import atomic_path, check_writable, clean_old_temporaries, write_csv
from alertvision.data.ingest.http import HttpError, JsonClient, Redactor
from alertvision.data.legacysurvey import (
    BANDS,
    FETCH_PIXSCALE,
    FETCH_SIZE,
    JPEG_PIXSCALE,
    JPEG_SIZE,
    CubeProvider,
    CutoutUnavailable,
)

log = logging.getLogger(__name__)

#: What the viewer says where a position is outside the footprint.
NO_OVERLAP = re.compile(rb"no\s+overlap", re.IGNORECASE)
FITS_MAGIC = b"SIMPLE  ="
JPEG_MAGIC = b"\xff\xd8\xff"
FAILURES_FILE = "fetch_failures.csv"
STATUSES = ("fetched", "cached", "uncovered", "failed")


class BadCutout(ValueError):
    """An answer that is not a valid cutout of its product (a (3, 252, 252) FITS cube, a 63x63 RGB JPEG)."""


class LegacySurveyFetchError(RuntimeError):
    """More sources failed than ``legacysurvey.viewer.max_failed_fraction`` allows."""


def is_no_overlap(response: urllib3.BaseHTTPResponse) -> bool:
    """Whether an answer is the viewer's 'no overlap' error (final: the sky will not change)."""
    data = response.data or b""
    return not data.startswith((FITS_MAGIC, JPEG_MAGIC)) and bool(NO_OVERLAP.search(data[:4096]))


def read_cube(data: bytes) -> np.ndarray:
    """The cube of a viewer FITS answer in the viewer's layout: (grz, 252, 252) float32, row 0 south,
    east left. Band order and orientation are taken from the header where it states them."""
    from astropy.io import fits  # deferred: astropy is heavy

    if not data.startswith(FITS_MAGIC):
        raise BadCutout(f"not a FITS file ({len(data)} bytes starting {data[:20]!r})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(data), memmap=False) as hdul:
                header = hdul[0].header
                cube = np.array(hdul[0].data, dtype=np.float32)
    except Exception as exc:  # astropy raises several types for a truncated file
        raise BadCutout(f"unreadable FITS: {type(exc).__name__}: {exc}") from None
    if cube.shape != (len(BANDS), FETCH_SIZE, FETCH_SIZE):
        raise BadCutout(f"expected a ({len(BANDS)}, {FETCH_SIZE}, {FETCH_SIZE}) cube, got {cube.shape}")
    stated = [str(header.get(f"BAND{i}", "")).strip().lower() for i in range(len(BANDS))]
    if all(stated):
        if sorted(stated) != sorted(BANDS):
            raise BadCutout(f"bands {stated}, expected {list(BANDS)}")
        cube = cube[[stated.index(b) for b in BANDS]]
    if _axis_step(header, 2) < 0:  # row 0 is north: turn it into the viewer's south-first layout
        cube = cube[:, ::-1, :]
    if _axis_step(header, 1) > 0:  # east to the right: mirror so that east is left
        cube = cube[:, :, ::-1]
    return np.ascontiguousarray(cube)


def _axis_step(header: Any, axis: int) -> float:
    """The sky step per pixel along a FITS axis (CDi_i, else CDELTi); 0 where the header says nothing."""
    for key in (f"CD{axis}_{axis}", f"CDELT{axis}"):
        if key in header:
            return float(header[key])
    return 0.0


def read_jpeg(data: bytes) -> np.ndarray:
    """The image of a viewer JPEG answer as the viewer draws it: (63, 63, 3) uint8 RGB (red, green,
    blue = z, r, g), row 0 north, east left."""
    from PIL import Image  # deferred: PIL is heavy

    if not data.startswith(JPEG_MAGIC):
        raise BadCutout(f"not a JPEG ({len(data)} bytes starting {data[:20]!r})")
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as im:
            im.load()  # a truncated file raises here
            mode, rgb = im.mode, np.asarray(im)
    except Exception as exc:  # Pillow raises several types for a broken file
        raise BadCutout(f"unreadable JPEG: {type(exc).__name__}: {exc}") from None
    if mode != "RGB" or rgb.shape != (JPEG_SIZE, JPEG_SIZE, 3):
        raise BadCutout(f"expected a {JPEG_SIZE}x{JPEG_SIZE} RGB JPEG, got {mode} {rgb.shape}")
    return rgb


def cache_path(
    cache_dir: str | os.PathLike, folder: str, object_id: str, ra: float, dec: float, suffix: str = ".fits"
) -> Path:
    """The cache file of a source's cutout; the position is in the name, so a moved source refetches."""
    return Path(cache_dir) / folder / f"{object_id}_{ra:.5f}{dec:+.5f}{suffix}"


def _fits_query(cfg: Mapping[str, Any]) -> dict[str, str]:
    return {"pixscale": f"{FETCH_PIXSCALE:g}", "size": str(FETCH_SIZE), "bands": "".join(BANDS)}


def _jpeg_query(cfg: Mapping[str, Any]) -> dict[str, str]:
    query = {"size": str(JPEG_SIZE), "pixscale": f"{JPEG_PIXSCALE:g}"}
    if cfg.get("jpeg_bands"):
        query["bands"] = str(cfg["jpeg_bands"])
    return query


def _jpeg_folder(cfg: Mapping[str, Any]) -> str:
    """The JPEG cache folder: the layer and the bands asked for (another ``jpeg_bands`` is another image)."""
    bands = cfg.get("jpeg_bands")
    return f"{cfg['layer']}-jpeg" + (f"-{bands}" if bands else "")


@dataclass(frozen=True)
class ViewerProduct:
    """What differs between the viewer's products; fetching, caching and retrying are shared."""

    name: str
    #: the ``legacysurvey.viewer`` key of the endpoint
    url_key: str
    #: the cache file suffix
    suffix: str
    #: bytes -> the raw array; raises :class:`BadCutout` for anything but a valid answer
    decode: Callable[[bytes], np.ndarray]
    #: viewer block -> the query parameters beside ra, dec and layer
    query: Callable[[Mapping[str, Any]], dict[str, str]]
    #: viewer block -> the cache folder under ``cache_dir``
    folder: Callable[[Mapping[str, Any]], str]


FITS = ViewerProduct("fits", "url", ".fits", read_cube, _fits_query, lambda cfg: cfg["layer"])
JPEG = ViewerProduct("jpeg", "jpeg_url", ".jpg", read_jpeg, _jpeg_query, _jpeg_folder)
VIEWER_PRODUCTS = {p.name: p for p in (FITS, JPEG)}


def _no_overlap_marker(path: Path) -> Path:
    return path.with_suffix(".nooverlap")


@dataclass
class FetchReport:
    """What a fetch did: counts per status and the sources that failed for good."""

    counts: Counter = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_sources(self) -> int:
        return int(sum(self.counts[s] for s in STATUSES))

    def failed_fraction(self) -> float:
        return self.counts["failed"] / max(1, self.n_sources)


class ViewerFetcher:
    """Fetch and cache cutouts of many sources, ``concurrency`` at a time; read them back as raw arrays
    (cubes for ``fits``, RGB images for ``jpeg``)."""

    def __init__(self, cfg: Mapping[str, Any], product: ViewerProduct = FITS):
        self.cfg = cfg
        self.product = product
        self.url = cfg[product.url_key]
        self.client = JsonClient(
            self.url,
            "Legacy Survey viewer",
            timeout_s=cfg["timeout_s"],
            retries=cfg["retries"],
            backoff_s=cfg["backoff_s"],
            rate_per_s=cfg["rate_per_s"],
            redactor=Redactor(),
            pool_size=cfg["concurrency"],
            final_when=is_no_overlap,
        )

    @property
    def cache_folder(self) -> Path:
        """Where this product's cutouts are cached."""
        return Path(self.cfg["cache_dir"]) / self.product.folder(self.cfg)

    def path(self, object_id: str, ra: float, dec: float) -> Path:
        """The cache file of a source's cutout."""
        return cache_path(
            self.cfg["cache_dir"], self.product.folder(self.cfg), object_id, ra, dec, suffix=self.product.suffix
        )

    def params(self, ra: float, dec: float) -> dict[str, str]:
        """The query of a source's cutout."""
        return {"ra": f"{ra:.6f}", "dec": f"{dec:.6f}", "layer": self.cfg["layer"], **self.product.query(self.cfg)}

    def fetch_one(self, object_id: str, ra: float, dec: float) -> str:
        """Make sure a source's cutout (or its 'no overlap') is cached; returns fetched, cached or uncovered.

        Raises :class:`CutoutUnavailable` where it cannot be had after the retries.
        """
        path = self.path(object_id, ra, dec)
        if _no_overlap_marker(path).is_file():
            return "uncovered"
        if path.is_file():
            try:
                self.product.decode(path.read_bytes())
                return "cached"
            except BadCutout as exc:  # not written by us (writes are atomic): fetch it again
                log.warning("cached cutout %s is unreadable (%s); fetching it again", path, exc)
        retry = Retry(total=self.cfg["retries"], backoff_factor=self.cfg["backoff_s"])
        while True:
            try:
                resp = self.client.request_raw("GET", "", params=self.params(ra, dec), authenticate=False)
            except HttpError as exc:
                raise CutoutUnavailable(str(exc)) from None
            if is_no_overlap(resp):
                with atomic_path(_no_overlap_marker(path)) as tmp:
                    tmp.write_text(f"HTTP {resp.status}: {resp.data[:200].decode('utf-8', 'replace')}\n")
                return "uncovered"
            if resp.status != 200:
                raise CutoutUnavailable(f"HTTP {resp.status}: {resp.data[:200].decode('utf-8', 'replace').strip()}")
            try:
                self.product.decode(resp.data)
            except BadCutout as exc:
                try:  # a complete but unreadable answer: retried under the same urllib3 policy
                    retry = retry.increment(method="GET", url=self.url, error=exc)
                except MaxRetryError:
                    raise CutoutUnavailable(f"unreadable answer after {self.cfg['retries']} retries: {exc}") from None
                log.info("unreadable cutout of %s (%s); retrying", object_id, exc)
                retry.sleep()
                continue
            with atomic_path(path) as tmp:
                tmp.write_bytes(resp.data)
            return "fetched"

    def fetch_all(self, sources: pd.DataFrame, progress: bool = True) -> FetchReport:
        """Fetch every source (columns objectId, ra, dec) not cached yet; a progress bar shows the counts."""
        report = FetchReport()
        check_writable(self.cache_folder, "Legacy Survey cutouts (legacysurvey.viewer.cache_dir)")
        stale = clean_old_temporaries(self.cache_folder)
        if stale:
            log.info("removed %d partial cutouts a killed fetch left in %s", stale, self.cache_folder)
        bar = tqdm(total=len(sources), desc="Legacy Survey cutouts", unit="src", disable=not progress, mininterval=1)
        with ThreadPoolExecutor(max_workers=self.cfg["concurrency"], thread_name_prefix="ls-fetch") as pool:
            futures = {
                pool.submit(self.fetch_one, r.objectId, float(r.ra), float(r.dec)): r
                for r in sources.itertuples(index=False)
            }
            for future in as_completed(futures):
                r = futures[future]
                try:
                    status = future.result()
                except CutoutUnavailable as exc:
                    status = "failed"
                    report.failures.append(
                        {"objectId": r.objectId, "ra": float(r.ra), "dec": float(r.dec), "error": str(exc)}
                    )
                report.counts[status] += 1
                bar.update()
                bar.set_postfix({s: report.counts[s] for s in STATUSES}, refresh=False)
        bar.close()
        report.failures.sort(key=lambda f: f["objectId"])
        return report

    def provider(self, failed: set[str]) -> CubeProvider:
        """Raw arrays from the cache: None for 'no overlap', :class:`CutoutUnavailable` for a failed source."""

        def provide(object_id: str, ra: float, dec: float) -> np.ndarray | None:
            path = self.path(object_id, ra, dec)
            if object_id in failed or not (path.is_file() or _no_overlap_marker(path).is_file()):
                raise CutoutUnavailable(f"no cutout of {object_id} was fetched")
            if _no_overlap_marker(path).is_file():
                return None
            return self.product.decode(path.read_bytes())

        return provide

    def close(self) -> None:
        self.client.close()


def fetch_cutouts(
    sources: pd.DataFrame,
    cfg: Mapping[str, Any],
    failures_csv: str | os.PathLike,
    progress: bool = True,
    product: ViewerProduct = FITS,
) -> tuple[CubeProvider, FetchReport]:
    """Fetch the ``product`` cutouts of ``sources`` (objectId, ra, dec) per ``legacysurvey.viewer``; a
    provider over the cache.

    Sources that failed for good are written to ``failures_csv`` (removed when none failed); more
    than ``max_failed_fraction`` of them stops with :class:`LegacySurveyFetchError`.
    """
    fetcher = ViewerFetcher(cfg, product)
    try:
        report = fetcher.fetch_all(sources, progress=progress)
    finally:
        fetcher.close()
    counts = {s: report.counts[s] for s in STATUSES}
    log.info(
        "Legacy Survey %s cutouts of %d sources: %s (cache %s)",
        product.name,
        report.n_sources,
        counts,
        fetcher.cache_folder,
    )
    failures_csv = Path(failures_csv)
    if report.failures:
        write_csv(failures_csv, pd.DataFrame(report.failures))
        log.warning(
            "%d source(s) failed after %d retries and are left out; listed in %s (a rerun asks again)",
            len(report.failures),
            cfg["retries"],
            failures_csv,
        )
    else:
        failures_csv.unlink(missing_ok=True)
    if report.failed_fraction() > cfg["max_failed_fraction"]:
        raise LegacySurveyFetchError(
            f"{len(report.failures)} of {report.n_sources} sources ({report.failed_fraction():.1%}) failed, more than "
            f"legacysurvey.viewer.max_failed_fraction = {cfg['max_failed_fraction']}; they are listed in "
            f"{failures_csv}, the others are cached in {cfg['cache_dir']}: rerun to ask again. First error: "
            f"{report.failures[0]['error']}"
        )
    return fetcher.provider({f["objectId"] for f in report.failures}), report
