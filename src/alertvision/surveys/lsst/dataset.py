"""The ``lsst`` dataset with ``data.lsst.source: avro``: Rubin/LSST packets plus a labels table -> the data contract.

It reads the view :func:`alertvision.data.sources.survey_config` makes (``data.avro`` there is the config's
``data.lsst.avro``, ``data.lsst`` the plugin's settings).

The inputs are listed as for ZTF (:func:`alertvision.data.ingest.avro.packet_files`: folders through links,
files, ``.tar`` archives, files compressed whole); each file or archive member holds Avro containers or one
wire packet (:meth:`LsstSurvey.read`). The labels table has columns ``diaObjectId``, ``label`` and
``source_set``; packets of other objects are counted
under ``unlabelled_source``. Each packet goes through :meth:`Survey.process`: the plugin's cuts
(``cut:<name>``), its triplet (``stamp_<reason>``) and its features; a repeated ``diaSourceId`` is
``duplicate_alert``.

The table (one row per alert, in ``images.npy`` order) has the contract's columns with these meanings:
``alert_id`` and ``candid`` the diaSourceId, ``objectId`` the diaObjectId (as text), ``jd`` the
midpointMjdTai + 2400000.5, ``fid`` the band index (u=0 ... y=5), ``magpsf`` the PSF magnitude,
``isdiffpos`` ``t`` (the ``positive`` cut keeps positive fluxes only), ``ra``/``dec``; plus the plugin's
metadata features (``band`` the index) and ``diaObjectId``. The manifest names the survey, the features, the
triplet's shape and the plugin's survey block.
"""

from __future__ import annotations

import bz2
import gzip
import io
import logging
import lzma
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd
from tqdm import tqdm

from alertvision.data.contract import (
    IMAGES_FILE,
    ContractError,
    ImageArrayWriter,
    building_dataset,
    config_digest,
    write_alerts,
    write_manifest,
)
from alertvision.data.ingest.archive import Member, read_archive
from alertvision.data.ingest.avro import AvroInputError, _holds_archive, _is_avro_member, packet_files
from alertvision.data.ingest.labels import LabelsError, check_labels
from alertvision.data.splits import assign_source_splits
from alertvision.surveys import survey_of_config
from alertvision.surveys.base import Packet, Skip, Survey
from alertvision.surveys.lsst.features import BANDS

log = logging.getLogger(__name__)

#: the diaObjectId of the labels table
LABEL_KEY = "diaObjectId"
JD_MINUS_MJD = 2400000.5
_OPENERS = {b"\x1f\x8b": gzip.decompress, b"BZh": bz2.decompress, b"\xfd7zXZ\x00": lzma.decompress}


def read_lsst_labels(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A labels table keyed by ``diaObjectId`` (CSV or Parquet) as :func:`check_labels` reads it (the key in
    its ``objectId`` column, as text: the ids exceed a float's 53 bits, so they are never read as floats)."""
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"labels table {path} not found (config key data.lsst.avro.labels)")
    if path.suffix.lower() in (".parquet", ".pq"):
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path, dtype={LABEL_KEY: str})
    if LABEL_KEY not in df.columns or "objectId" in df.columns:
        raise LabelsError(
            f"{path}: an LSST labels table (data.lsst.avro.labels) has a {LABEL_KEY} column and no objectId; "
            f"it has {', '.join(map(str, df.columns))}"
        )
    ids = df.pop(LABEL_KEY)
    df.insert(
        0,
        "objectId",
        [v if pd.isna(v) else str(int(v)) if isinstance(v, (int, np.integer)) else str(v).strip() for v in ids],
    )
    return check_labels(df, str(path))


def _decompressed(data: bytes) -> bytes:
    for magic, decompress in _OPENERS.items():
        if data.startswith(magic):
            return decompress(data)
    return data


def iter_lsst_packets(survey: Survey, files: list[Path]) -> Iterator[tuple[str, Packet] | Skip]:
    """Every packet of the files and archives, as the plugin reads them."""

    for path in files:
        raw = path.read_bytes()
        try:
            data = _decompressed(raw)
        except (OSError, EOFError, lzma.LZMAError) as exc:
            yield Skip("corrupt_packet", str(path), f"cannot be decompressed: {exc}")
            continue
        if _holds_archive(data[:512], path):
            for item in read_archive(io.BytesIO(data), str(path), wanted=_is_avro_member):
                if isinstance(item, Member):
                    yield from survey.read(_decompressed(item.data), f"{path}:{item.name}")
                elif isinstance(item, Skip):
                    yield item
            continue
        yield from survey.read(data, str(path))


def ingest_lsst_avro(
    config: Mapping[str, Any],
    out_dir: str | os.PathLike,
    progress: bool = True,
    *,
    source: str = "avro",
    synthetic: bool = False,
    digest: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Write the dataset of the labelled diaObjects' Rubin packets under ``data.avro.path``; returns the manifest.

    ``source``, ``synthetic``, ``digest`` and ``extra`` (merged over the manifest's own keys) are for a caller
    that made the packets itself: the synthetic LSST sky (:mod:`alertvision.synthetic.lsst`)."""

    cfg = config["data"]["avro"]
    if not cfg.get("path") or not cfg.get("labels"):
        raise AvroInputError(
            "config key data.lsst.avro: data.lsst.source 'avro' needs data.lsst.avro.path (Rubin packets) and "
            "data.lsst.avro.labels (a table of diaObjectId, label, source_set)"
        )
    for entry in [cfg["path"]] if isinstance(cfg["path"], (str, os.PathLike)) else list(cfg["path"]):
        if not Path(entry).exists():
            raise AvroInputError(f"packet path {entry} does not exist (config key data.lsst.avro.path)")
    survey = survey_of_config(config)
    labels, listings = read_lsst_labels(cfg["labels"])
    by_object = labels.set_index("objectId")
    files = packet_files(cfg["path"])
    skipped: Counter = Counter()
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()
    names = survey.feature_names
    spec = survey.triplet_spec
    shape = (len(spec.channels), spec.size, spec.size)

    fields: dict[int, dict[str, Any]] = {}  # the few diaSource fields each row needs, by diaSourceId

    def labelled(items: Iterator[tuple[str, Packet] | Skip]) -> Iterator[tuple[str, Packet] | Skip]:
        for item in items:
            if not isinstance(item, Skip):
                oid = survey.source_id(item[1])
                if oid is None:  # a solar-system source: the dia_object cut counts it
                    yield item
                    continue
                if str(oid) not in by_object.index:
                    skipped["unlabelled_source"] += 1
                    continue
                aid = survey.alert_id(item[1])
                if aid in seen or aid in fields:
                    skipped["duplicate_alert"] += 1
                    continue
                ds = item[1]["diaSource"]
                fields[aid] = {
                    "objectId": str(oid),
                    "mjd": ds.get("midpointMjdTai"),
                    "band": ds.get("band"),
                    "psfFlux": ds.get("psfFlux"),
                }
            yield item

    with building_dataset(out_dir) as build:
        with ImageArrayWriter(build / IMAGES_FILE, shape) as writer:
            stream = tqdm(iter_lsst_packets(survey, files), desc="lsst packets", unit="pkt", disable=not progress)
            for alert in survey.process(labelled(stream), skipped):
                aid = int(alert.alert_id)
                seen.add(aid)
                writer.append(alert.image)
                rows.append({**fields[aid], "alert_id": aid, "features": alert.features})
        if not rows:
            raise ContractError(
                f"no alert of the {len(labels)} labelled diaObjects survived (lsst); skipped: "
                f"{dict(skipped) or 'nothing'}: check data.lsst.avro.path and the labels' diaObjectId"
            )
        alerts = _table(rows, names, by_object)
        alerts["split"] = assign_source_splits(alerts, config["splits"]["probabilities"], config["splits"]["seed"])
        alerts = write_alerts(build, alerts, names)
        manifest = write_manifest(
            build,
            alerts,
            dataset="lsst",
            source=source,
            synthetic=synthetic,
            digest=digest or config_digest(cfg, config["splits"], config["data"].get("lsst") or {}, "lsst"),
            survey="lsst",
            extra={
                "skipped": dict(sorted(skipped.items())),
                "metadata_features": list(names),
                "image_shape": list(shape),
                "survey_block": survey.survey_block(),
                "survey_config": {k: v for k, v in (config["data"].get("lsst") or {}).items() if k != "schemas"},
                "filled": dict(getattr(survey, "filled", {}) or {}),
                "inputs": {"packet_files": len(files), "labels": str(cfg["labels"]), "labelled_sources": len(labels)},
                "labels": listings,
                **dict(extra or {}),
            },
        )
    log.info(
        "wrote %d LSST alerts of %d diaObjects to %s (skipped: %s)",
        len(alerts),
        alerts["objectId"].nunique(),
        out_dir,
        dict(skipped),
    )
    return manifest


def _table(rows: list[dict[str, Any]], names: tuple[str, ...], labels: pd.DataFrame) -> pd.DataFrame:
    """The contract's table of the collected alerts (see the module docstring), labels joined."""
    feats = np.stack([r["features"] for r in rows]).astype(np.float32)
    df = pd.DataFrame(feats, columns=list(names))
    df.insert(0, "alert_id", np.array([r["alert_id"] for r in rows], dtype=np.int64))
    df.insert(1, "candid", df["alert_id"].to_numpy())
    df.insert(2, "objectId", [r["objectId"] for r in rows])
    df.insert(3, "jd", np.array([r["mjd"] for r in rows], dtype=np.float64) + JD_MINUS_MJD)
    df["fid"] = [BANDS.get(str(r["band"]), -1) for r in rows]
    df["magpsf"] = df["psf_mag"].to_numpy(dtype=np.float32)
    df["isdiffpos"] = ["t" if (r["psfFlux"] or 0) > 0 else "f" for r in rows]
    df["diaObjectId"] = df["objectId"].astype(np.int64)
    joined = labels.loc[df["objectId"]].reset_index(drop=True)
    for col in joined.columns:
        df[col] = joined[col].to_numpy()
    return df
