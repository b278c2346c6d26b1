"""The Rubin/LSST survey plugin: packets (:mod:`.packets`), triplets (:mod:`.triplet`), features
(:mod:`.features`), ids and cuts (here). See docs/lsst.md for what Rubin's schema says and the
choices made."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, BinaryIO, ClassVar, Iterator, Mapping

import numpy as np

from alertvision.surveys.base import CutDef, FeatureDef, Packet, Skip, Survey, TripletSpec
from alertvision.surveys.lsst.features import BANDS, FEATURE_DEFS, HISTORY, LsstFeatures
from alertvision.surveys.lsst.packets import SCHEMA_VERSIONS, SchemaStore, read_packets
from alertvision.surveys.lsst.triplet import TripletSettings, lsst_triplet

__all__ = ["LsstSettings", "LsstSurvey", "TripletSettings"]

CUT_DEFS: tuple[CutDef, ...] = (
    CutDef("dia_object", "alerts of a diaObject: diaSource.diaObjectId not 0 or null (solar-system sources have none)"),
    CutDef("positive", "a positive difference: diaSource.psfFlux > 0 (ZTF's isdiffpos)"),
    CutDef("band", "diaSource.band in the configured bands (default all six)"),
    CutDef("reliability", "diaSource.reliability >= the configured minimum (default none: every alert passes)"),
)


@dataclass(frozen=True)
class LsstSettings:
    """The LSST block of the config: the triplet, the fill rule for fields an older schema lacks
    (``"error"`` or a number), the cuts, and where wire packets' schemas come from."""

    triplet: TripletSettings = field(default_factory=TripletSettings)
    missing: str | float = "error"
    bands: tuple[str, ...] = tuple(BANDS)
    min_reliability: float | None = None
    schema_folder: str | None = None
    schema_package: bool = True
    schema_registry: str | None = None

    @classmethod
    def from_config(cls, block: Mapping[str, Any]) -> "LsstSettings":
        """From a mapping such as ``{"triplet": {"size": 63, "pixel_scale": null}, "features": {"missing":
        "error"}, "cuts": {...}, "schemas": {"folder": ..., "registry": <url>, "package": true}}``."""
        known = {"triplet", "features", "cuts", "schemas"}
        unknown = set(block) - known
        if unknown:
            raise ValueError(f"lsst: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        cuts = dict(block.get("cuts") or {})
        schemas = dict(block.get("schemas") or {})
        bands = tuple(cuts.get("bands", tuple(BANDS)))
        bad = [b for b in bands if b not in BANDS]
        if bad:
            raise ValueError(f"lsst.cuts.bands: {bad} are not Rubin bands ({', '.join(BANDS)})")
        return cls(
            triplet=TripletSettings(**dict(block.get("triplet") or {})),
            missing=(block.get("features") or {}).get("missing", "error"),
            bands=bands,
            min_reliability=cuts.get("min_reliability"),
            schema_folder=schemas.get("folder"),
            schema_package=bool(schemas.get("package", True)),
            schema_registry=schemas.get("registry"),
        )


class LsstSurvey(Survey):
    """Rubin/LSST alerts, schemas 7.0 to 11.1, container or wire framing."""

    name: ClassVar[str] = "lsst"
    feature_defs: ClassVar[tuple[FeatureDef, ...]] = FEATURE_DEFS
    history: ClassVar[str] = HISTORY

    def __init__(self, settings: LsstSettings | None = None):
        self.settings = settings or LsstSettings()
        s = self.settings
        self.schemas = SchemaStore(s.schema_folder, s.schema_package, s.schema_registry)
        self._features = LsstFeatures(self.settings.missing)

    @classmethod
    def from_config(cls, block: Mapping[str, Any]) -> "LsstSurvey":
        return cls(LsstSettings.from_config(block))

    @property
    def filled(self) -> Counter:
        """Every use of the fill value, by ``feature:field`` (a Counter)."""
        return self._features.filled

    def read(self, stream: bytes | BinaryIO, origin: str) -> Iterator[tuple[str, Packet] | Skip]:
        return read_packets(stream, origin, self.schemas)

    def alert_id(self, packet: Packet) -> int:
        """``diaSourceId`` (schema 8.0 on), ``alertId`` (up to 7.x)."""
        if "diaSourceId" in packet:
            return int(packet["diaSourceId"])
        return int(packet["alertId"])

    def source_id(self, packet: Packet) -> int | None:
        """``diaSource.diaObjectId``; None for 0 or null (a solar-system source)."""
        oid = packet["diaSource"].get("diaObjectId")
        return int(oid) if oid else None

    @property
    def cut_defs(self) -> tuple[CutDef, ...]:
        return CUT_DEFS

    def failed_cut(self, packet: Packet) -> str | None:
        ds = packet["diaSource"]
        if not ds.get("diaObjectId"):
            return "dia_object"
        flux = ds.get("psfFlux")
        if flux is None or not float(flux) > 0:
            return "positive"
        if ds.get("band") not in self.settings.bands:
            return "band"
        if self.settings.min_reliability is not None:
            rel = ds.get("reliability")
            if rel is None or not float(rel) >= self.settings.min_reliability:
                return "reliability"
        return None

    @property
    def triplet_spec(self) -> TripletSpec:
        return self.settings.triplet.spec()

    def triplet(self, packet: Packet) -> np.ndarray:
        return lsst_triplet(packet, self.settings.triplet)

    def features(self, packet: Packet) -> np.ndarray:
        return self._features(packet)

    def survey_block(self) -> dict[str, Any]:
        s = self.settings
        return {
            **super().survey_block(),
            "schema_versions": list(SCHEMA_VERSIONS),
            "framings": ["container", "wire (byte 0 = 0, 4-byte big-endian id = major*100+minor, schemaless body)"],
            "ids": {"alert": "diaSourceId (alertId up to 7.x)", "source": "diaSource.diaObjectId"},
            "missing_fields": s.missing,
            "cut_settings": {"bands": list(s.bands), "min_reliability": s.min_reliability},
        }
