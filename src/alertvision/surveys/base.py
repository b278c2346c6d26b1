"""What differs between alert surveys, behind one interface: :class:`Survey`.

A survey plugin owns everything that depends on where an alert comes from: how its packets are
decoded (container files, a wire format), the cuts an alert must pass, the triplet a model sees
(which cutouts, size, pixel scale, orientation, the rule for masked and non-finite pixels, the
normalisation), the metadata features (names, order, definitions), the ids of an alert and of its
source, the history a feature may use, and the survey block of an exported model's contract.

The rest of the pipeline (datasets, training, export, predict) handles arrays and tables only.
The generic loop :meth:`Survey.process` turns a stream of packets into model inputs, counting every
packet that does not become one under a reason, as the ZTF ingest does (``stamp_<reason>`` for a
cutout, ``cut:<name>`` for a cut, the decoder's reasons for a packet that cannot be read).

A plugin wraps existing functions: the ZTF one (:mod:`alertvision.surveys.ztf`) maps :meth:`Survey.read` to
``data.ingest.avro.read_avro``, :meth:`Survey.triplet` to ``data.triplet.triplet_from_alert``,
:meth:`Survey.features` to ``data.ingest.packets.packet_features``, :meth:`Survey.failed_cut` to
``data.features.Cuts.reason`` and :attr:`Survey.feature_defs` to ``data.features.METADATA_FEATURES``
with their definitions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO, ClassVar, Iterable, Iterator, Mapping

import numpy as np

from alertvision.data.ingest.packets import Skip, count_skip
from alertvision.data.triplet import StampError

__all__ = [
    "AlertInput",
    "CutDef",
    "FeatureDef",
    "FeatureError",
    "PacketError",
    "Skip",
    "StampError",
    "Survey",
    "TripletSpec",
]

Packet = Mapping[str, Any]


class PacketError(ValueError):
    """A packet that cannot be decoded; ``reason`` is the short key it is counted under."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class FeatureError(ValueError):
    """A metadata feature that cannot be computed under the configured fill rule (a field the packet's
    schema lacks, with ``missing: error``)."""


@dataclass(frozen=True)
class FeatureDef:
    """One metadata feature: its name (the model's input order is the order of the definitions), the
    formula over packet fields, its units, which detections count, and the fields it reads."""

    name: str
    formula: str
    units: str
    counts: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class CutDef:
    """One cut an alert must pass to become a model input: its name (skips are counted as
    ``cut:<name>``) and what it keeps."""

    name: str
    keeps: str


@dataclass(frozen=True)
class TripletSpec:
    """What the model's image input is: the channels and the cutout each comes from, the size, the
    pixel scale, the orientation, the rule for masked and non-finite pixels, how a cutout of another
    size is fitted, and the normalisation."""

    channels: tuple[str, ...]
    cutouts: tuple[str, ...]
    size: int
    pixel_scale: str
    orientation: str
    nonfinite: str
    fit: str
    normalisation: str

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class AlertInput:
    """One alert as a model input: where it came from, its ids, the triplet and the features."""

    origin: str
    alert_id: int | str
    source_id: int | str | None
    image: np.ndarray
    features: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


class Survey(ABC):
    """A survey plugin. Subclasses set :attr:`name` and implement the abstract methods."""

    #: the key that selects the plugin (the dataset's survey: ztf, lsst), written into manifests and exports
    name: ClassVar[str]

    @classmethod
    def from_config(cls, block: Mapping[str, Any]) -> "Survey":
        """The plugin configured from its config block (an empty mapping: its defaults)."""
        if block:
            raise ValueError(f"survey {cls.name!r} takes no settings, got {', '.join(map(str, block))}")
        return cls()

    # -- packets ---------------------------------------------------------------------------------
    @abstractmethod
    def read(self, stream: bytes | BinaryIO, origin: str) -> Iterator[tuple[str, Packet] | Skip]:
        """Every packet in one input (a file's bytes or an open binary file) as ``(origin, packet)``, and
        a :class:`Skip` naming the reason where a packet, or the rest of the input, cannot be read."""

    @abstractmethod
    def alert_id(self, packet: Packet) -> int | str:
        """The id of the alert (unique per alert)."""

    @abstractmethod
    def source_id(self, packet: Packet) -> int | str | None:
        """The id of the astrophysical source the alert belongs to (labels join on it); None where the
        alert has none."""

    # -- cuts ------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def cut_defs(self) -> tuple[CutDef, ...]:
        """The cuts, in the order they are applied."""

    @abstractmethod
    def failed_cut(self, packet: Packet) -> str | None:
        """The name of the first cut the alert fails, or None when it passes them all."""

    # -- triplet ---------------------------------------------------------------------------------
    @property
    @abstractmethod
    def triplet_spec(self) -> TripletSpec:
        """What :meth:`triplet` returns."""

    @abstractmethod
    def triplet(self, packet: Packet) -> np.ndarray:
        """The model's image input of one alert, float32 (channels, size, size); raises
        :class:`StampError` for a cutout that cannot become one."""

    # -- metadata features -----------------------------------------------------------------------
    #: the metadata features in model input order, with their definitions
    feature_defs: ClassVar[tuple[FeatureDef, ...]]
    #: which earlier detections a feature may use (no look-ahead)
    history: ClassVar[str]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.feature_defs)

    @abstractmethod
    def features(self, packet: Packet) -> np.ndarray:
        """The metadata features of one alert, float32 in :attr:`feature_names` order; raises
        :class:`FeatureError` where the fill rule forbids a missing field."""

    # -- export ----------------------------------------------------------------------------------
    def survey_block(self) -> dict[str, Any]:
        """The survey's part of an exported model's contract (plain data, JSON-serialisable)."""
        return {
            "survey": self.name,
            "triplet": self.triplet_spec.as_dict(),
            "cuts": [asdict(c) for c in self.cut_defs],
            "metadata_features": [{**asdict(f), "fields": list(f.fields)} for f in self.feature_defs],
            "history": self.history,
        }

    # -- the generic loop ------------------------------------------------------------------------
    def process(
        self,
        items: Iterable[tuple[str, Packet] | Skip],
        skipped: Counter,
        *,
        cuts: bool = True,
    ) -> Iterator[AlertInput]:
        """Model inputs of the packets in ``items`` (as :meth:`read` yields them). Every packet that does
        not become one is counted in ``skipped`` (a Counter the caller may merge into its own) under its
        reason: the decoder's, ``cut:<name>``, ``stamp_<reason>``. A :class:`FeatureError` (a missing field
        under ``missing: error``) is not a damaged packet: it stops the loop."""
        for item in items:
            if isinstance(item, Skip):
                count_skip(skipped, item.reason, item.origin, item.detail)
                continue
            origin, packet = item
            if cuts:
                failed = self.failed_cut(packet)
                if failed is not None:
                    skipped[f"cut:{failed}"] += 1
                    continue
            try:
                image = self.triplet(packet)
            except StampError as exc:
                count_skip(skipped, f"stamp_{exc.reason}", origin, f"alert {self.alert_id(packet)}: {exc}")
                continue
            features = self.features(packet)
            yield AlertInput(origin, self.alert_id(packet), self.source_id(packet), image, features)
