"""SYNTHETIC Rubin/LSST alert packets of the synthetic sky, and the dataset built from them.

The sources are the ZTF simulation's (:func:`alertvision.synthetic.ztf.synthetic_scenes`, the same
``data.synthetic`` block and seed), observed by Rubin (:mod:`.lsst_observe`) where they lie in its
sky (``dec <= data.synthetic.lsst.dec_max``). Each diaSource becomes a packet in Rubin's layout
(:mod:`.lsst_schema`): the diaSource, the object's earlier diaSources of the window as
``prvDiaSources``, the ``diaObject`` as it stood, and three FITS cutouts (PRIMARY image in nJy with a
WCS and ``ROTPA``, UNCERT variance, PSFIMAGE), written to Avro container files. The dataset goes
through the real LSST ingest (:func:`alertvision.surveys.lsst.dataset.ingest_lsst_avro`) with a labels
table keyed by ``diaObjectId``; its manifest says ``synthetic: true``.

Ids are recognisably not Rubin's: ``diaObjectId = 7e18 + source index``, ``diaSourceId = 8e18 + source
index * 10^4 + visit index``. The labels table carries ``ztf_objectId``, the same source's name in
the ZTF simulation (the cross-survey link), and the simulation truth ``sim_kind``, ``sim_peak_mag``.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import io
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import fastavro
import numpy as np
import pandas as pd
from astropy.io import fits
from tqdm import tqdm

from alertvision.data.contract import config_digest
from alertvision.surveys.lsst.dataset import ingest_lsst_avro
from alertvision.synthetic.lsst_observe import KNOWN_ASTEROID_MAG, PIXEL_SCALE, Detection, observe_lsst, psf_image
from alertvision.synthetic.lsst_schema import BANDS, NAMESPACE, alert_schema
from alertvision.synthetic.scene import LABELS, LSST_DIA_OBJECT_BASE, Scene, lsst_object_id
from alertvision.synthetic.ztf import synthetic_scenes

log = logging.getLogger(__name__)
GENERATOR_VERSION = "1"
DIA_OBJECT_BASE = LSST_DIA_OBJECT_BASE
DIA_SOURCE_BASE = 8_000_000_000_000_000_000
SS_OBJECT_BASE = 6_000_000_000_000_000_000
JD_MINUS_MJD = 2400000.5
SOURCES_PER_FILE = 64
SYNTHETIC_NOTE = "SYNTHETIC Rubin/LSST alerts simulated by alertvision.synthetic.lsst: not observations"
LSST_DEFAULTS: dict[str, Any] = {"cutout_size": 30, "cadence_days": 3.0, "dec_max": 30.0}


def dia_object_id(scene: Scene) -> int:
    """The synthetic diaObjectId of a scene."""
    return lsst_object_id(scene.index)


def in_rubin_sky(scene: Scene, dec_max: float) -> bool:
    """Whether Rubin observes the scene's position."""
    return scene.dec <= dec_max


# --- cutouts -------------------------------------------------------------------------------------


def cutout_bytes(image: np.ndarray, variance: np.ndarray, psf: np.ndarray, header: Mapping[str, Any]) -> bytes:
    """One cutout as Rubin sends it: uncompressed FITS, PRIMARY (the image), UNCERT (its variance,
    ``UTYPE = 'VarianceUncertainty'``), PSFIMAGE."""
    primary = fits.PrimaryHDU(np.asarray(image, dtype=">f4"))
    for key, value in header.items():
        primary.header[key] = value
    primary.header["COMMENT"] = SYNTHETIC_NOTE
    uncert = fits.ImageHDU(np.asarray(variance, dtype=">f4"), name="UNCERT")
    uncert.header["UTYPE"] = "VarianceUncertainty"
    out = io.BytesIO()
    fits.HDUList([primary, uncert, fits.ImageHDU(np.asarray(psf, dtype=">f8"), name="PSFIMAGE")]).writeto(out)
    return out.getvalue()


def _wcs_header(scene: Scene, det: Detection) -> dict[str, Any]:
    rot = det.visit.rotation
    c, s = math.cos(rot), math.sin(rot)
    scale = PIXEL_SCALE / 3600.0
    # pixel offsets -> sky offsets (arcsec +west, +north) is the inverse rotation; RA grows to the east
    return {
        "SYNTHET": (True, "SYNTHETIC: simulated cutout"),
        "ROTPA": (math.degrees(rot) % 360.0, "Pos angle in deg of focal plane +Y wrt North"),
        "BUNIT": "nJy",
        "WCSAXES": 2,
        "CTYPE1": "RA---TAN",
        "CTYPE2": "DEC--TAN",
        "CRPIX1": det.centre[0] + 1.0,  # the source's position (FITS pixels count from 1)
        "CRPIX2": det.centre[1] + 1.0,
        "CRVAL1": scene.ra,
        "CRVAL2": scene.dec,
        "PC1_1": -c * scale,
        "PC1_2": -s * scale,
        "PC2_1": -s * scale,
        "PC2_2": c * scale,
        "CDELT1": 1.0,
        "CDELT2": 1.0,
    }


# --- records ---------------------------------------------------------------------------------------


def _visit_id(jd: float, number: int) -> int:
    day = dt.date(1858, 11, 17) + dt.timedelta(days=int(math.floor(jd - JD_MINUS_MJD - 0.5)))
    return int(day.strftime("%Y%m%d")) * 100_000 + number


def _opt_float(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def dia_source(scene: Scene, det: Detection, k: int, known_asteroid: bool) -> dict[str, Any]:
    """The diaSource record of detection ``k`` (the visit's index) of ``scene``."""
    f, v = det.fields, det.visit
    ox, oy = f["x_cutout"] - det.centre[0], f["y_cutout"] - det.centre[1]  # the centroid's offset from the source
    c, s = math.cos(v.rotation), math.sin(v.rotation)
    west = (ox * c + oy * s) * PIXEL_SCALE
    north = (-ox * s + oy * c) * PIXEL_SCALE
    cosd = max(math.cos(math.radians(scene.dec)), 1e-3)
    pos_err = v.fwhm * 0.4247 / max(f["snr"], 1.0) / 3600.0
    mjd = v.jd - JD_MINUS_MJD
    out = {
        "diaSourceId": DIA_SOURCE_BASE + scene.index * 10_000 + k,
        "visit": _visit_id(v.jd, v.number),
        "detector": v.detector,
        "diaObjectId": None if known_asteroid else dia_object_id(scene),
        "ssObjectId": SS_OBJECT_BASE + scene.index if known_asteroid else None,
        "midpointMjdTai": mjd,
        "ra": (scene.ra - west / 3600.0 / cosd) % 360.0,
        "raErr": pos_err / cosd,
        "dec": scene.dec + north / 3600.0,
        "decErr": pos_err,
        "x": v.x + ox,
        "y": v.y + oy,
        "band": v.band,
        "timeProcessedMjdTai": mjd + 0.0015,
    }
    for key in (
        "isNegative",
        "snr",
        "psfFlux",
        "psfFluxErr",
        "psfChi2",
        "psfNdata",
        "scienceFlux",
        "scienceFluxErr",
        "templateFlux",
        "templateFluxErr",
        "extendedness",
        "reliability",
        "isDipole",
        "bboxSize",
        "pixelFlags",
        "pixelFlags_bad",
        "pixelFlags_cr",
        "pixelFlags_crCenter",
        "pixelFlags_edge",
        "pixelFlags_interpolated",
        "pixelFlags_interpolatedCenter",
        "pixelFlags_saturated",
        "pixelFlags_saturatedCenter",
    ):
        value = f[key]
        out[key] = _opt_float(value) if isinstance(value, float) else value
    return out


def dia_object(scene: Scene, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The diaObject after the last diaSource of ``history`` (the window's diaSources so far): counts include
    the detections before the window (the scene's ``ndethist_base``)."""
    now = history[-1]["midpointMjdTai"]
    first = history[0]["midpointMjdTai"]
    if scene.jdstarthist_base is not None:
        first = min(first, scene.jdstarthist_base - JD_MINUS_MJD)
    out: dict[str, Any] = {
        "diaObjectId": dia_object_id(scene),
        "validityStartMjdTai": now,
        "ra": float(np.mean([h["ra"] for h in history])),
        "dec": float(np.mean([h["dec"] for h in history])),
        "firstDiaSourceMjdTai": first,
        "lastDiaSourceMjdTai": now,
        "nDiaSources": int(scene.ndethist_base + len(history)),
    }
    for band in BANDS:
        fluxes = [h["psfFlux"] for h in history if h["band"] == band and h["psfFlux"] is not None]
        out[f"{band}_psfFluxMean"] = float(np.mean(fluxes)) if fluxes else None
        out[f"{band}_psfFluxNdata"] = len(fluxes) if fluxes else None
    return out


def scene_packets(scene: Scene, cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Rubin alert packets of one scene, in time order (``cfg`` is ``data.synthetic``)."""
    lsst = {**LSST_DEFAULTS, **dict(cfg.get("lsst") or {})}
    size = int(lsst["cutout_size"])
    seen, detections = observe_lsst(scene, lsst["cadence_days"], size, cfg["nan_patch_rate"], cfg["edge_rate"])
    index = {id(v): k for k, v in enumerate(seen)}
    packets: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    for det in detections:
        known = scene.kind == "asteroid" and det.signal.get("mag", 99.0) < KNOWN_ASTEROID_MAG
        source = dia_source(scene, det, index[id(det.visit)], known)
        header = _wcs_header(scene, det)
        img = det.images
        psf_sci, psf_tmpl = psf_image(img.fwhm), psf_image(img.template_fwhm)
        packet = {
            "diaSourceId": source["diaSourceId"],
            "diaSource": source,
            "prvDiaSources": None if known else [dict(h) for h in history],
            "diaObject": None if known else dia_object(scene, history + [source]),
            "cutoutDifference": cutout_bytes(img.difference, img.difference_var, psf_sci, header),
            "cutoutScience": cutout_bytes(img.science, img.science_var, psf_sci, header),
            "cutoutTemplate": cutout_bytes(img.template, img.template_var, psf_tmpl, header),
        }
        packets.append(packet)
        if not known:
            history.append(source)
    return packets


def labels_row(scene: Scene) -> dict[str, Any]:
    """The labels table's row of a scene: keyed by diaObjectId, with the ZTF name and the simulation truth."""
    return {
        "diaObjectId": dia_object_id(scene),
        "label": LABELS[scene.subset],
        "source_set": scene.subset,
        "ztf_objectId": scene.object_id,
        "sim_kind": scene.kind,
        "sim_peak_mag": scene.peak_mag if scene.kind == "sn" else np.nan,
    }


def _sync_marker(seed: int, part: int) -> bytes:
    return hashlib.sha256(f"alertvision.synthetic.lsst:{seed}:{part}".encode()).digest()[:16]


def write_container(path: str | os.PathLike, packets: Iterable[dict[str, Any]], seed: int, part: int) -> None:
    """Write packets as one Avro container file, its schema (:mod:`.lsst_schema`) in the header and a sync
    marker drawn from the seed (the same seed, the same bytes)."""
    with open(path, "wb") as fh:
        fastavro.writer(
            fh,
            fastavro.parse_schema(alert_schema()),
            list(packets),
            codec="null",
            metadata={f"{NAMESPACE}.note": SYNTHETIC_NOTE},
            sync_marker=_sync_marker(seed, part),
        )


def write_synthetic_lsst_packets(
    cfg: Mapping[str, Any], folder: str | os.PathLike, progress: bool = False
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Write the SYNTHETIC Rubin packets of the ``data.synthetic`` block ``cfg`` to ``folder``
    (``part-NNNNN.avro``, :data:`SOURCES_PER_FILE` sources a file); returns the labels table (one row per
    source Rubin observes, detected or not) and counts for the manifest."""
    lsst = {**LSST_DEFAULTS, **dict(cfg.get("lsst") or {})}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scenes = synthetic_scenes(cfg)
    rubin = [s for s in scenes if in_rubin_sky(s, lsst["dec_max"])]
    rows, n_packets, never = [], 0, 0
    for part, start in enumerate(range(0, len(rubin), SOURCES_PER_FILE)):
        chunk = rubin[start : start + SOURCES_PER_FILE]
        packets: list[dict[str, Any]] = []
        for scene in tqdm(chunk, desc=f"synthetic LSST part {part}", unit="src", disable=not progress, mininterval=2):
            mine = scene_packets(scene, cfg)
            never += not mine
            packets += mine
            rows.append(labels_row(scene))
        n_packets += len(packets)
        write_container(folder / f"part-{part:05d}.avro", packets, int(cfg["seed"]), part)
    counts = {
        "n_scenes": len(scenes),
        "outside_rubin_sky": len(scenes) - len(rubin),
        "source_never_detected": never,
        "n_packets": n_packets,
    }
    return pd.DataFrame(rows), counts


def build_synthetic_lsst(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Write the SYNTHETIC LSST dataset of ``config`` (``data.synthetic``, ``data.lsst``, ``splits``) to
    ``out_dir`` through the real LSST ingest; returns the manifest (``synthetic: true``). The packets are written
    to a temporary folder beside ``out_dir`` (about 100 kB a packet, mostly the FITS cutouts) and removed after."""
    cfg = config["data"]["synthetic"]
    parent = Path(out_dir).resolve().parent  # beside the dataset: the packets can be large for a small /tmp
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".synthetic-lsst-packets-", dir=parent) as tmp:
        labels, counts = write_synthetic_lsst_packets(cfg, Path(tmp) / "packets", progress)
        labels.to_parquet(Path(tmp) / "labels.parquet", index=False)
        inner = copy.deepcopy(dict(config))
        inner["data"] = {
            **inner["data"],
            "avro": {"path": str(Path(tmp) / "packets"), "labels": str(Path(tmp) / "labels.parquet")},
        }
        lsst_block = config["data"].get("lsst") or {}
        manifest = ingest_lsst_avro(
            inner,
            out_dir,
            progress=progress,
            source="synthetic",
            synthetic=True,
            digest=config_digest(cfg, config["splits"], lsst_block, "lsst"),
            extra={
                "generator_version": GENERATOR_VERSION,
                "simulation": counts,
                "inputs": {"synthetic": "data.synthetic (packets written and read back through the LSST ingest)"},
                "notes": [
                    SYNTHETIC_NOTE,
                    "reliability is a stand-in (a fixed function of the fit, S/N and flags), not Rubin's model.",
                    "ztf_objectId names the same simulated source in the synthetic ZTF dataset of the same seed.",
                    "sim_kind and sim_peak_mag are simulation truth, not model inputs.",
                ],
            },
        )
    return manifest
