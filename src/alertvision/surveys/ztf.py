"""The ZTF survey plugin: today's ZTF functions behind the :class:`~alertvision.surveys.base.Survey` interface.

Nothing here computes anything new: :meth:`ZtfSurvey.read` is :func:`alertvision.data.ingest.avro.read_avro`
(Avro container files), :meth:`ZtfSurvey.triplet` is :func:`alertvision.data.triplet.triplet_from_alert`,
:meth:`ZtfSurvey.features` is :func:`alertvision.data.ingest.packets.packet_features` and
:meth:`ZtfSurvey.failed_cut` is :meth:`alertvision.data.features.Cuts.reason`, so a ZTF dataset, run or
score is byte-identical whether it goes through the plugin or the functions (tests/unit/test_survey_ztf.py).
:func:`projected_schema` is the reader schema ``alertvision predict`` decodes packets with: only the fields
scoring reads (:data:`PACKET_FIELDS`), with the full decode's values (tests/unit/test_predict_decode.py).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar, Iterator, Mapping

import numpy as np

from alertvision.data.contract import IMAGE_SIZE
from alertvision.data.features import BTSBOT_CUTS, DERIVED_FORMULAS, METADATA_FEATURES, RAW_FEATURES, Cuts
from alertvision.data.ingest.avro import read_avro
from alertvision.data.ingest.packets import CANDIDATE_COLUMNS, InputReport, packet_features
from alertvision.data.triplet import CHANNELS, CUTOUT_FIELDS, check_masked_pixels, stamp_contract, triplet_from_alert
from alertvision.surveys.base import CutDef, FeatureDef, Packet, Skip, Survey, TripletSpec

__all__ = ["PACKET_FIELDS", "ZtfSurvey", "projected_schema"]

CUT_DEFS: tuple[CutDef, ...] = (
    CutDef("cut_programid", "candidate.programid in data.cuts.programids (BTSbot's: 1, the public survey)"),
    CutDef("cut_isdiffpos", "a positive subtraction: candidate.isdiffpos t, 1 or true in any case"),
    CutDef("cut_isdiffpos_spelling", "data.cuts.isdiffpos btsbot: isdiffpos exactly 't'"),
    CutDef("cut_fid", "candidate.fid 1 or 2 (g or r)"),
    CutDef("cut_sgscore", "candidate.sgscore1 >= 0 or candidate.sgscore2 >= 0"),
)
HISTORY = (
    "the packet's prv_candidates detections strictly before the alert's jd, then the alert itself "
    "(data.avro.history: alerts or prv_candidates for a training set)"
)


def _feature_defs() -> tuple[FeatureDef, ...]:
    out = []
    for name in METADATA_FEATURES:
        if name in RAW_FEATURES:
            path, units = RAW_FEATURES[name]
            out.append(FeatureDef(name, path, units, "the alert's candidate", (path,)))
        else:
            formula, units = DERIVED_FORMULAS[name]
            out.append(FeatureDef(name, formula, units, "the history (see history)", ("candidate", "prv_candidates")))
    return tuple(out)


FEATURE_DEFS = _feature_defs()

#: What scoring a packet reads (:func:`projected_schema`), by where it sits: the packet's own fields, its
#: ``candidate``'s (the table row, the features and the cuts), each ``prv_candidates`` entry's (the history
#: of the derived features) and each cutout's. Any other field the packet holds (``classifications``) is
#: kept whole.
PACKET_FIELDS: dict[str, tuple[str, ...]] = {
    "alert": ("objectId", "candid", "candidate", "prv_candidates", *CUTOUT_FIELDS, "classifications"),
    "candidate": tuple(dict.fromkeys(("candid", *CANDIDATE_COLUMNS, "isdiffpos", "fid", "sgscore1", "sgscore2"))),
    "prv_candidate": ("jd", "fid", "magpsf"),
    "cutout": ("stampData",),
}
_ROLE_OF_FIELD = {"candidate": "candidate", "prv_candidates": "prv_candidate", **dict.fromkeys(CUTOUT_FIELDS, "cutout")}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def projected_schema(schema: Mapping[str, Any] | list) -> Any:
    """The reader schema that decodes of a ZTF packet (``schema``: its writer schema, as a container's header
    holds it) only the fields :data:`PACKET_FIELDS` names; fastavro skips the rest (the other ~80 candidate
    fields, ~55 of the ~60 of each ``prv_candidates`` entry, the cutouts' file names). Every kept field has
    the writer's type, so its value is the full decode's. A named record reached in several places keeps the
    fields of all of them; one reached inside a field kept whole keeps all of its own."""
    keep: dict[str, set[str] | None] = {}  # record full name -> kept fields (None: all)
    defs: dict[str, Mapping[str, Any]] = {}
    visited: set[tuple[str, str]] = set()

    def full(name: str, namespace: str) -> str:
        return name if "." in name or not namespace else f"{namespace}.{name}"

    def mark(t: Any, namespace: str, role: str) -> None:  # role: a PACKET_FIELDS key, or "all"
        if isinstance(t, list):
            for branch in t:
                mark(branch, namespace, role)
            return
        if isinstance(t, str):
            if t in _PRIMITIVES:
                return
            name = t if t in defs else full(t, namespace)
            if name in defs:
                mark(defs[name], name.rpartition(".")[0], role)
            return
        if not isinstance(t, Mapping):
            return
        kind = t.get("type")
        if kind == "array":
            mark(t.get("items"), namespace, role)
        elif kind == "map":
            mark(t.get("values"), namespace, role)
        elif kind == "record":
            name = full(str(t["name"]), str(t.get("namespace", namespace)))
            defs.setdefault(name, t)
            if (name, role) in visited:
                return
            visited.add((name, role))
            wanted = None if role == "all" else set(PACKET_FIELDS[role])
            keep[name] = None if wanted is None or keep.get(name, set()) is None else keep.get(name, set()) | wanted
            inner = name.rpartition(".")[0]
            for f in t.get("fields", ()):
                if wanted is None or f["name"] in wanted:
                    child = "all" if role != "alert" else _ROLE_OF_FIELD.get(f["name"], "all")
                    mark(f["type"], inner, child)
        elif isinstance(kind, (Mapping, list)):
            mark(kind, namespace, role)

    def rewrite(t: Any, namespace: str) -> Any:
        if isinstance(t, list):
            return [rewrite(branch, namespace) for branch in t]
        if not isinstance(t, Mapping):
            return t
        kind = t.get("type")
        if kind == "array":
            return {**t, "items": rewrite(t["items"], namespace)}
        if kind == "map":
            return {**t, "values": rewrite(t["values"], namespace)}
        if kind == "record":
            name = full(str(t["name"]), str(t.get("namespace", namespace)))
            kept = keep.get(name)
            inner = name.rpartition(".")[0]
            fields = [
                {**f, "type": rewrite(f["type"], inner)}
                for f in t.get("fields", ())
                if kept is None or f["name"] in kept
            ]
            return {**t, "fields": fields}
        if isinstance(kind, (Mapping, list)):
            return {**t, "type": rewrite(kind, namespace)}
        return t

    mark(schema, "", "alert")
    return rewrite(schema, "")


@dataclass(frozen=True)
class ZtfSurvey(Survey):
    """ZTF alerts: the cuts of ``data.cuts`` and the masked-pixel rule of ``data.masked_pixels``."""

    name: ClassVar[str] = "ztf"
    feature_defs: ClassVar[tuple[FeatureDef, ...]] = FEATURE_DEFS
    history: ClassVar[str] = HISTORY
    cuts: Cuts = BTSBOT_CUTS
    masked_pixels: str = "drop"

    def __post_init__(self) -> None:
        check_masked_pixels(self.masked_pixels)

    @classmethod
    def from_config(cls, block: Mapping[str, Any]) -> "ZtfSurvey":
        """From ``{"cuts": <data.cuts>, "masked_pixels": <data.masked_pixels>}`` (either may be absent)."""
        unknown = set(block) - {"cuts", "masked_pixels"}
        if unknown:
            raise ValueError(f"ztf: unknown key(s) {', '.join(sorted(unknown))}; known: cuts, masked_pixels")
        return cls(Cuts.from_spec(block.get("cuts")), str(block.get("masked_pixels", "drop")))

    def read(self, stream: bytes | BinaryIO, origin: str) -> Iterator[tuple[str, Packet] | Skip]:
        fh = io.BytesIO(bytes(stream)) if isinstance(stream, (bytes, bytearray, memoryview)) else stream
        for item in read_avro(fh, origin):
            if not isinstance(item, InputReport):
                yield item

    def alert_id(self, packet: Packet) -> int:
        """``candid``."""
        return int(packet.get("candid", packet["candidate"].get("candid")))

    def source_id(self, packet: Packet) -> str:
        """``objectId``."""
        return str(packet["objectId"])

    @property
    def cut_defs(self) -> tuple[CutDef, ...]:
        return CUT_DEFS

    def failed_cut(self, packet: Packet) -> str | None:
        c = packet["candidate"]
        return self.cuts.reason(
            c.get("isdiffpos"), c.get("fid"), c.get("sgscore1"), c.get("sgscore2"), c.get("programid")
        )

    @property
    def triplet_spec(self) -> TripletSpec:
        return TripletSpec(
            channels=CHANNELS,
            cutouts=CUTOUT_FIELDS,
            size=IMAGE_SIZE,
            pixel_scale="native (1.01 arcsec/px)",
            orientation="as stored (no flip, no transpose)",
            nonfinite=f"masked pixels (|value| > 1e19 or inf): {self.masked_pixels}; NaN -> 0; no finite pixel: drop",
            fit="smaller: zero-pad after the last row and column; larger: drop",
            normalisation="each stamp divided by its float64 L2 norm, cast to float32; all zero: drop",
        )

    def triplet(self, packet: Packet) -> np.ndarray:
        return triplet_from_alert(packet, self.masked_pixels)

    def features(self, packet: Packet) -> np.ndarray:
        return packet_features(packet)

    def survey_block(self) -> dict[str, Any]:
        return {
            **super().survey_block(),
            "ids": {"alert": "candid", "source": "objectId"},
            "stamps": stamp_contract(self.masked_pixels),
            "cut_settings": self.cuts.spec(),
        }
