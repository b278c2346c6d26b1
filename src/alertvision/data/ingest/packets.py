"""ZTF alert packets -> the data contract, whatever carried them (Avro files, Kowalski queries).

A packet is a dict as fastavro reads it from the ZTF Avro schema (or as Kowalski returns it):
``objectId``, ``candid``, ``candidate`` (the alert's fields), ``prv_candidates`` (earlier
detections and non-detections) and the three stamps. Packets stream through
:func:`write_packet_dataset` one at a time: the cuts are applied on the candidate fields, the
triplet is written to ``images.npy`` at once, and only the table rows and the detection history
stay in memory. The derived features are computed per source at the end (see
:func:`features.derive_source_features`) over a history of ``history``: ``alerts`` (BTSbot's: every
alert packet of the source, cut or not) or ``prv_candidates`` (those plus the detections the
packets' ``prv_candidates`` list). BTSbot's dims cut drops, at the end, the dims sources whose
brightest alert is at or brighter than ``dims_peak_limit`` (``images.npy`` is then compacted).
Stamps with masked pixels follow ``masked_pixels`` (``data.masked_pixels``, see
:mod:`alertvision.data.triplet`): ``drop`` counts them under ``stamp_masked_pixels``.

Nothing is dropped silently: every packet that does not become a row is counted in the
manifest's ``skipped`` under a reason, and the first few of each reason are named in the log.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
from tqdm import tqdm

from alertvision.data.contract import (
    IMAGES_FILE,
    REQUIRED_COLUMNS,
    ContractError,
    ImageArrayWriter,
    alert_ids,
    building_dataset,
    compact_images,
    write_alerts,
    write_manifest,
)
from alertvision.data.features import (
    BTSBOT_CUTS,
    DERIVED_FEATURES,
    METADATA_FEATURES,
    Cuts,
    derive_alert_features,
    derive_source_features,
)
from alertvision.data.splits import assign_source_splits
from alertvision.data.triplet import StampError, check_masked_pixels, triplet_from_alert

log = logging.getLogger(__name__)

#: Candidate fields kept per alert: the non-derived features, the raw fields, provenance.
CANDIDATE_COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys(
        (
            "jd",
            "fid",
            "isdiffpos",
            "programid",
            "field",
            "rcid",
            *(
                f
                for f in METADATA_FEATURES
                if f
                not in (
                    "age",
                    "days_since_peak",
                    "days_to_peak",
                    "peakmag_so_far",
                    "maxmag_so_far",
                    "nnotdet",
                    "new_drb",
                )
            ),
            "jdstarthist",
            "drb",
            "rb",
            "magnr",
            "distnr",
        )
    )
)
#: Every column a packet's row has before the labels table's columns join it: these a labels table may not
#: carry (they would overwrite the alert's own values).
ROW_COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys((*REQUIRED_COLUMNS, "candid", *CANDIDATE_COLUMNS, *DERIVED_FEATURES, "new_drb"))
)
#: Skip reasons logged one by one (up to this many each); the rest are only counted.
LOG_FIRST = 5
#: What the derived features' history holds (``data.<source>.history``).
HISTORIES = ("alerts", "prv_candidates")


@dataclass(frozen=True)
class Skip:
    """Something in a packet stream that is not a packet (a truncated file, an unreadable archive)."""

    reason: str
    origin: str
    detail: str = ""


@dataclass(frozen=True)
class InputReport:
    """What reading one input came to (an archive: members read and damaged, bytes unreadable), for the
    manifest's ``archives_read``; it follows the input's packets in the stream."""

    origin: str
    counts: Mapping[str, int]


def count_skip(skipped: Counter, reason: str, origin: str, detail: str = "") -> None:
    """Count a packet skipped for ``reason``; name it in the log while there are few of its kind
    (:data:`LOG_FIRST`), then say once that only the count is kept."""
    skipped[reason] += 1
    if skipped[reason] <= LOG_FIRST:
        log.warning("skipped %s (%s)%s", origin, reason, f": {detail}" if detail else "")
    elif skipped[reason] == LOG_FIRST + 1:
        log.warning("more packets skipped for %s; only their count is kept", reason)


def candidate_row(packet: Mapping[str, Any]) -> dict[str, Any]:
    """The table row of a packet's alert: objectId, candid and :data:`CANDIDATE_COLUMNS` as the packet
    gives them (None where absent). Raises KeyError / TypeError for a packet without a candidate."""
    cand = packet["candidate"]
    return {
        "objectId": packet["objectId"],
        "candid": packet.get("candid", cand.get("candid")),
        **{c: cand.get(c) for c in CANDIDATE_COLUMNS},
    }


def packet_new_drb(packet: Mapping[str, Any]) -> tuple[Any, str]:
    """The alert's ``new_drb`` and where it came from: ``classifications.braai`` when the packet has it,
    else the candidate's ``drb``."""
    braai = (packet.get("classifications") or {}).get("braai")
    if braai is not None:
        return braai, "classifications.braai"
    return packet["candidate"].get("drb"), "candidate.drb"


def prv_detections(prv: Any) -> list[tuple[float, int, float]]:
    """The detections of a packet's ``prv_candidates`` as (jd rounded to 1e-6, fid, magpsf); non-detections
    (no magnitude) and malformed entries are left out."""
    out = []
    for p in prv or ():
        if not (type(p) is dict or isinstance(p, Mapping)) or p.get("magpsf") is None or p.get("jd") is None:
            continue  # non-detections carry no magnitude
        try:
            out.append((round(float(p["jd"]), 6), int(p["fid"]), float(p["magpsf"])))
        except (TypeError, ValueError):
            continue
    return out


class BadJd(ValueError):
    """An alert whose ``jd`` is missing, NaN or infinite: it has no place in a light curve (counted
    under ``bad_jd``)."""


def finite_jd(value: Any) -> float:
    """An alert's ``jd`` as a float; :class:`BadJd` where it is missing, NaN or infinite."""
    jd = numeric_field(value)
    if not np.isfinite(jd):
        raise BadJd(f"jd is {value!r}, not a finite number")
    return jd


def numeric_field(value: Any) -> float:
    """A candidate field as pandas' ``to_numeric(errors="coerce")`` reads it: None or text -> NaN."""
    try:
        return float(value) if value is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def packet_features(packet: Mapping[str, Any]) -> np.ndarray:
    """The 25 metadata features (float32, :data:`METADATA_FEATURES` order) of a packet's alert from the
    packet alone: its candidate fields, its ``new_drb`` and the features derived over its
    ``prv_candidates`` (the history a live broker has). For a source with one packet these equal what
    the avro ingest (``history: prv_candidates``) stores."""
    row = candidate_row(packet)
    values = {c: numeric_field(row[c]) for c in CANDIDATE_COLUMNS if c != "isdiffpos"}
    values["new_drb"] = numeric_field(packet_new_drb(packet)[0])
    values.update(
        derive_alert_features(
            values["jd"],
            int(values["fid"]),
            values["magpsf"],
            values["jdstarthist"],
            values["ncovhist"],
            values["ndethist"],
            prv_detections(packet.get("prv_candidates")),
        )
    )
    return np.array([values[f] for f in METADATA_FEATURES], dtype=np.float32)


class PacketCollector:
    """Accumulate packets of labelled sources: rows in memory, triplets straight to the writer."""

    def __init__(
        self,
        writer: ImageArrayWriter,
        labels: pd.DataFrame,
        history: str = "prv_candidates",
        cuts: Cuts = BTSBOT_CUTS,
        masked_pixels: str = "drop",
    ):
        if history not in HISTORIES:
            raise ValueError(f"history {history!r} is not one of {', '.join(HISTORIES)}")
        self.masked_pixels = check_masked_pixels(masked_pixels)
        self.writer = writer
        self.labels = labels.set_index("objectId")
        self.with_prv = history == "prv_candidates"
        self.cuts = cuts
        self.rows: list[dict[str, Any]] = []
        self.history: list[tuple[str, float, int, float]] = []
        self.peak: dict[str, float] = {}  # brightest magpsf of each source's alert packets, cut or not
        self.skipped: Counter = Counter()
        self.new_drb_from: list[str] = []  # per row: where its new_drb came from
        self._seen: set[tuple[str, float, int]] = set()

    def skip(self, reason: str, origin: str, detail: str = "") -> None:
        """Count a skip; name it in the log while there are few of its kind."""
        count_skip(self.skipped, reason, origin, detail)

    def add(self, packet: Mapping[str, Any], origin: str) -> bool:
        """Take one packet; returns whether it became a row of the dataset."""
        object_id = packet.get("objectId")
        cand = packet.get("candidate")
        if not isinstance(object_id, str) or not isinstance(cand, Mapping):
            self.skip("bad_packet", origin, "no objectId or candidate")
            return False
        if object_id not in self.labels.index:
            self.skipped["unlabelled_source"] += 1  # the normal case in a nightly archive: not logged
            return False
        if self.with_prv:
            self._add_history(object_id, packet.get("prv_candidates"))
        try:
            row = candidate_row(packet)
            key = (object_id, round(finite_jd(row["jd"]), 6), int(row["fid"]))
        except (TypeError, ValueError) as exc:
            self.skip("bad_jd" if isinstance(exc, BadJd) else "bad_candidate", origin, f"{object_id}: {exc}")
            return False
        if key in self._seen:
            self.skip("duplicate_alert", origin, f"{object_id} at jd {key[1]} fid {key[2]}")
            return False
        if row["magpsf"] is not None:
            self.history.append((object_id, key[1], key[2], float(row["magpsf"])))
            self.peak[object_id] = min(self.peak.get(object_id, np.inf), float(row["magpsf"]))
        cut = self.cuts.reason(row["isdiffpos"], row["fid"], row["sgscore1"], row["sgscore2"], row["programid"])
        if cut is not None:
            self.skipped[cut] += 1  # the normal case in a nightly archive: not logged
            return False
        try:
            image = triplet_from_alert(packet, self.masked_pixels)
        except StampError as exc:
            self.skip(f"stamp_{exc.reason}", origin, f"{object_id} candid {row['candid']}: {exc}")
            return False
        row["new_drb"], origin_of_drb = packet_new_drb(packet)
        self.new_drb_from.append(origin_of_drb)
        self.writer.append(image)
        self._seen.add(key)
        self.rows.append(row)
        return True

    def _add_history(self, object_id: str, prv: Any) -> None:
        self.history.extend((object_id, *detection) for detection in prv_detections(prv))

    def table(self) -> pd.DataFrame:
        """The collected alerts with labels and derived features, in images.npy order (no split yet)."""
        if not self.rows:
            return pd.DataFrame()
        df = pd.DataFrame(self.rows)
        for col in CANDIDATE_COLUMNS:
            if col not in ("isdiffpos",):
                df[col] = pd.to_numeric(df[col], errors="coerce")
        history = pd.DataFrame(self.history, columns=["objectId", "jd", "fid", "magpsf"])
        df = derive_source_features(df, history)
        labels = self.labels.loc[df["objectId"]].reset_index(drop=True)
        for col in labels.columns:
            df[col] = labels[col].to_numpy()
        df.insert(0, "alert_id", alert_ids(df["objectId"], df["jd"], df["fid"]))
        return df


def dims_peak_cut(alerts: pd.DataFrame, peak: Mapping[str, float], limit: float | None) -> tuple[np.ndarray, dict]:
    """Which alerts survive BTSbot's dims cut (dims sources whose brightest alert is at or brighter than
    ``limit`` are dropped; None keeps all), and what it dropped."""
    keep = np.ones(len(alerts), dtype=bool)
    report = {"limit": limit, "sources": 0, "alerts": 0}
    if limit is None or alerts.empty:
        return keep, report
    source_peak = alerts["objectId"].map(peak).to_numpy(dtype=float)
    cut = (alerts["source_set"] == "dims").to_numpy() & (source_peak <= float(limit))
    keep[cut] = False
    report.update(sources=int(alerts.loc[cut, "objectId"].nunique()), alerts=int(cut.sum()))
    if cut.any():
        log.info(
            "dims cut: %d dims source(s) peaked at or brighter than %s mag; their %d alert(s) dropped",
            report["sources"],
            limit,
            report["alerts"],
        )
    return keep, report


def write_packet_dataset(
    out_dir: str | os.PathLike,
    stream: Iterable[tuple[str, Mapping[str, Any]] | Skip],
    labels: pd.DataFrame,
    splits_cfg: Mapping[str, Any],
    *,
    source: str,
    digest: str,
    extra: Mapping[str, Any] | None = None,
    progress: bool = True,
    total: int | None = None,
    history: str = "prv_candidates",
    dims_peak_limit: float | None = None,
    cuts: Cuts = BTSBOT_CUTS,
    masked_pixels: str = "drop",
) -> dict:
    """Write the dataset of the labelled sources' packets in ``stream``; returns the manifest.

    ``stream`` yields ``(origin, packet)`` pairs (origin names the file or query, for the log),
    :class:`Skip` records, and :class:`InputReport` records (gathered into the manifest's
    ``archives_read``, by origin, when there are any). ``labels`` has columns objectId, label,
    source_set (see :mod:`alertvision.data.ingest.labels`); its other columns are carried into
    ``alerts.parquet``.
    Splits are drawn per source and subset from ``splits_cfg``. ``history``, ``dims_peak_limit`` and
    ``masked_pixels``: see the module docstring; ``cuts``: ``data.cuts`` (each alert cut is counted in
    ``skipped`` under its :data:`~alertvision.data.features.CUT_REASONS` reason, and the settings go in
    the manifest).
    """
    with building_dataset(out_dir) as build:
        with ImageArrayWriter(build / IMAGES_FILE) as writer:
            collector = PacketCollector(writer, labels, history, cuts, masked_pixels)
            reports: dict[str, dict[str, int]] = {}
            bar = tqdm(stream, desc=f"{source} packets", unit="pkt", total=total, disable=not progress, mininterval=2)
            for item in bar:
                if isinstance(item, Skip):
                    collector.skip(item.reason, item.origin, item.detail)
                elif isinstance(item, InputReport):
                    reports[item.origin] = dict(item.counts)
                else:
                    collector.add(item[1], item[0])
            alerts = collector.table()
            keep, dims_cut = dims_peak_cut(alerts, collector.peak, dims_peak_limit)
            if not keep.any():
                raise ContractError(
                    f"no alert of the {len(labels)} labelled sources survived ({source}); "
                    f"skipped: {dict(collector.skipped) or 'nothing'}, dims cut: {dims_cut['alerts']}: "
                    f"check the paths and the labels"
                )
        cut_sources = set(alerts.loc[~keep, "objectId"])
        if not keep.all():
            compact_images(build / IMAGES_FILE, keep)
            alerts = alerts[keep].reset_index(drop=True)
        new_drb_from = Counter(np.asarray(collector.new_drb_from)[keep].tolist())
        alerts["split"] = assign_source_splits(alerts, splits_cfg["probabilities"], splits_cfg["seed"])
        alerts = write_alerts(build, alerts)
        missing = sorted(set(labels["objectId"]) - set(alerts["objectId"]) - cut_sources)
        if missing:
            log.warning(
                "%d labelled sources have no alert in the dataset, e.g. %s", len(missing), ", ".join(missing[:5])
            )
        notes = []
        if new_drb_from.get("candidate.drb"):
            notes.append(
                "new_drb is the alert's own drb where the packet has no classifications.braai: "
                "no braai model was run on the triplets."
            )
        manifest = write_manifest(
            build,
            alerts,
            dataset="ztf",
            source=source,
            synthetic=False,
            digest=digest,
            extra={
                "skipped": dict(sorted(collector.skipped.items())),
                "dims_cut": dims_cut,
                "cuts": cuts.spec(),
                "history": history,
                "masked_pixels": masked_pixels,
                "new_drb_from": dict(new_drb_from),
                "labelled_sources_without_alerts": len(missing),
                "notes": notes,
                **({"archives_read": reports} if reports else {}),
                **dict(extra or {}),
            },
        )
    log.info(
        "wrote %d alerts of %d sources to %s (skipped: %s)",
        len(alerts),
        alerts["objectId"].nunique(),
        out_dir,
        dict(collector.skipped),
    )
    return manifest
