"""Rubin/LSST metadata features: a BTSbot-like set from ``diaSource``, ``diaObject`` and ``prvDiaSources``.

Every feature is defined in :data:`FEATURE_DEFS` (formula, units, which detections count, the fields
read), so the docs and an exported model's contract print the same text the code follows.

Fluxes are nJy; magnitudes are AB: ``m = 31.4 - 2.5 log10(flux / nJy)``, NaN where the flux is not
positive. The history (:data:`HISTORY`) is the alert itself plus the entries of its ``prvDiaSources``
strictly earlier than its ``midpointMjdTai`` (a later or repeated entry, by ``diaSourceId``, is left
out): no look-ahead, the same rule as ZTF's ``prv_candidates`` history.

A field the packet's schema does not have (an older schema) follows the fill rule ``missing``:
``"error"`` raises :class:`~alertvision.surveys.base.FeatureError` naming the field, the feature and the
alert; a number is used instead and every use is counted (:attr:`LsstFeatures.filled`). A field that
is present but null (and a ``diaObject`` that is null, as for a solar-system source) gives NaN, which the
model's ``metadata_fill`` policy handles like any other non-finite value.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable, Mapping

import numpy as np

from alertvision.surveys.base import FeatureDef, FeatureError

#: zero point of Rubin's nJy fluxes in AB magnitudes
AB_ZERO_POINT_NJY = 31.4
#: the band as a number
BANDS: dict[str, int] = {"u": 0, "g": 1, "r": 2, "i": 3, "z": 4, "y": 5}
HISTORY = (
    "the alert and its prvDiaSources strictly earlier than its midpointMjdTai (unique diaSourceId); "
    "Rubin sends up to 12 months of them"
)
_DET = "the alert's diaSource"
_HIST = "the history: the alert and its earlier prvDiaSources"
_POS = "the history's detections with psfFlux > 0"

FEATURE_DEFS: tuple[FeatureDef, ...] = (
    FeatureDef("psf_mag", "31.4 - 2.5 log10(psfFlux); NaN if psfFlux <= 0", "AB mag", _DET, ("diaSource.psfFlux",)),
    FeatureDef(
        "psf_mag_err",
        "2.5 / ln(10) * psfFluxErr / abs(psfFlux)",
        "mag",
        _DET,
        ("diaSource.psfFlux", "diaSource.psfFluxErr"),
    ),
    FeatureDef("snr", "snr (the PSF flux's signal-to-noise)", "1", _DET, ("diaSource.snr",)),
    FeatureDef("reliability", "reliability (Rubin's real/bogus score)", "0..1", _DET, ("diaSource.reliability",)),
    FeatureDef("extendedness", "extendedness", "0..1", _DET, ("diaSource.extendedness",)),
    FeatureDef("is_dipole", "isDipole as 0/1", "0/1", _DET, ("diaSource.isDipole",)),
    FeatureDef("psf_chi2_ndata", "psfChi2 / psfNdata", "1", _DET, ("diaSource.psfChi2", "diaSource.psfNdata")),
    FeatureDef("pixel_flags", "pixelFlags (any pixel flag) as 0/1", "0/1", _DET, ("diaSource.pixelFlags",)),
    FeatureDef(
        "pixel_flags_saturated_center",
        "pixelFlags_saturatedCenter as 0/1",
        "0/1",
        _DET,
        ("diaSource.pixelFlags_saturatedCenter",),
    ),
    FeatureDef("pixel_flags_cr_center", "pixelFlags_crCenter as 0/1", "0/1", _DET, ("diaSource.pixelFlags_crCenter",)),
    FeatureDef(
        "pixel_flags_interpolated_center",
        "pixelFlags_interpolatedCenter as 0/1",
        "0/1",
        _DET,
        ("diaSource.pixelFlags_interpolatedCenter",),
    ),
    FeatureDef("pixel_flags_edge", "pixelFlags_edge as 0/1", "0/1", _DET, ("diaSource.pixelFlags_edge",)),
    FeatureDef("band", "band as u=0 g=1 r=2 i=3 z=4 y=5", "index", _DET, ("diaSource.band",)),
    FeatureDef("ra", "ra", "deg", _DET, ("diaSource.ra",)),
    FeatureDef("dec", "dec", "deg", _DET, ("diaSource.dec",)),
    FeatureDef(
        "science_mag",
        "31.4 - 2.5 log10(scienceFlux); NaN if scienceFlux <= 0",
        "AB mag",
        _DET,
        ("diaSource.scienceFlux",),
    ),
    FeatureDef(
        "ndethist",
        "diaObject.nDiaSources (NaN without a diaObject)",
        "count",
        "every diaSource of the diaObject when the alert was made",
        ("diaObject.nDiaSources",),
    ),
    FeatureDef(
        "ndet_so_far",
        "number of detections in the history",
        "count",
        _HIST,
        ("diaSource.midpointMjdTai", "prvDiaSources.midpointMjdTai"),
    ),
    FeatureDef(
        "age",
        "midpointMjdTai - min(midpointMjdTai over the history)",
        "days",
        _HIST,
        ("diaSource.midpointMjdTai", "prvDiaSources.midpointMjdTai"),
    ),
    FeatureDef(
        "peakmag_so_far",
        "min psf_mag over the history's positive detections",
        "AB mag",
        _POS,
        ("diaSource.psfFlux", "prvDiaSources.psfFlux"),
    ),
    FeatureDef(
        "maxmag_so_far",
        "max psf_mag over the history's positive detections",
        "AB mag",
        _POS,
        ("diaSource.psfFlux", "prvDiaSources.psfFlux"),
    ),
    FeatureDef(
        "days_since_peak",
        "midpointMjdTai - t_peak; t_peak the earliest time the running minimum psf_mag is reached",
        "days",
        _POS,
        ("diaSource.midpointMjdTai", "prvDiaSources.midpointMjdTai", "prvDiaSources.psfFlux"),
    ),
    FeatureDef(
        "days_to_peak",
        "t_peak - min(midpointMjdTai over the history)",
        "days",
        _POS + "; the first time over every detection of the history",
        ("diaSource.midpointMjdTai", "prvDiaSources.midpointMjdTai", "prvDiaSources.psfFlux"),
    ),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURE_DEFS)


def ab_mag(flux_njy: Any) -> float:
    """AB magnitude of a flux in nJy; NaN where it is null, not finite or not positive."""
    f = _num(flux_njy)
    return AB_ZERO_POINT_NJY - 2.5 * math.log10(f) if f > 0 else math.nan  # NaN > 0 is False


def _num(x: Any) -> float:
    if x is None:
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def history(packet: Mapping[str, Any]) -> list[tuple[float, float]]:
    """The (midpointMjdTai, psfFlux) of the alert and its earlier ``prvDiaSources`` (see :data:`HISTORY`),
    sorted by time."""
    ds = packet["diaSource"]
    t = _num(ds.get("midpointMjdTai"))
    own = ds.get("diaSourceId")
    seen = {own}
    out = [(t, _num(ds.get("psfFlux")))]
    for p in packet.get("prvDiaSources") or ():
        if not isinstance(p, Mapping) or p.get("diaSourceId") in seen:
            continue
        tp = _num(p.get("midpointMjdTai"))
        if tp < t:  # NaN never counts
            seen.add(p.get("diaSourceId"))
            out.append((tp, _num(p.get("psfFlux"))))
    return sorted(out)


def _history_features(packet: Mapping[str, Any]) -> dict[str, float]:
    hist = history(packet)
    t = _num(packet["diaSource"].get("midpointMjdTai"))
    t_first = min(h[0] for h in hist)
    peak = max_mag = t_peak = math.nan
    for tp, flux in hist:
        m = ab_mag(flux)
        if m != m:
            continue
        if not peak <= m:  # strictly brighter (or the first): a new peak
            peak, t_peak = m, tp
        if not max_mag >= m:
            max_mag = m
    return {
        "ndet_so_far": float(len(hist)),
        "age": t - t_first,
        "peakmag_so_far": peak,
        "maxmag_so_far": max_mag,
        "days_since_peak": t - t_peak,
        "days_to_peak": t_peak - t_first,
    }


def _flag(x: Any) -> float:
    return math.nan if x is None else float(bool(x))


def _alert_features(ds: Mapping[str, Any], obj: Mapping[str, Any] | None) -> dict[str, Callable[[], float]]:
    flux, err = _num(ds.get("psfFlux")), _num(ds.get("psfFluxErr"))
    return {
        "psf_mag": lambda: ab_mag(flux),
        "psf_mag_err": lambda: 2.5 / math.log(10) * err / abs(flux) if flux else math.nan,
        "snr": lambda: _num(ds.get("snr")),
        "reliability": lambda: _num(ds.get("reliability")),
        "extendedness": lambda: _num(ds.get("extendedness")),
        "is_dipole": lambda: _flag(ds.get("isDipole")),
        "psf_chi2_ndata": lambda: (
            _num(ds.get("psfChi2")) / _num(ds.get("psfNdata")) if ds.get("psfNdata") else math.nan
        ),
        "pixel_flags": lambda: _flag(ds.get("pixelFlags")),
        "pixel_flags_saturated_center": lambda: _flag(ds.get("pixelFlags_saturatedCenter")),
        "pixel_flags_cr_center": lambda: _flag(ds.get("pixelFlags_crCenter")),
        "pixel_flags_interpolated_center": lambda: _flag(ds.get("pixelFlags_interpolatedCenter")),
        "pixel_flags_edge": lambda: _flag(ds.get("pixelFlags_edge")),
        "band": lambda: float(BANDS.get(str(ds.get("band")), math.nan)),
        "ra": lambda: _num(ds.get("ra")),
        "dec": lambda: _num(ds.get("dec")),
        "science_mag": lambda: ab_mag(ds.get("scienceFlux")),
        "ndethist": lambda: math.nan if obj is None else _num(obj.get("nDiaSources")),
    }


class LsstFeatures:
    """Compute :data:`FEATURE_DEFS` for Rubin alerts under the fill rule ``missing`` (``"error"`` or a
    number) for fields the packet's schema lacks; :attr:`filled` counts each fill by ``feature:field``."""

    def __init__(self, missing: str | float = "error"):
        if not (missing == "error" or (isinstance(missing, (int, float)) and not isinstance(missing, bool))):
            raise ValueError(f"lsst.features.missing {missing!r} must be 'error' or a number")
        self.missing = missing
        self.filled: Counter = Counter()

    def _absent(self, packet: Mapping[str, Any], field: str) -> bool:
        part, _, key = field.partition(".")
        if part == "diaSource":
            return key not in packet["diaSource"]
        if part == "diaObject":
            obj = packet.get("diaObject")
            return "diaObject" not in packet or (isinstance(obj, Mapping) and key not in obj)
        return part not in packet

    def __call__(self, packet: Mapping[str, Any]) -> np.ndarray:
        """The features of one alert, float32 in :data:`FEATURE_NAMES` order."""
        ds = packet["diaSource"]
        obj = packet.get("diaObject")
        single = _alert_features(ds, obj if isinstance(obj, Mapping) else None)
        derived: dict[str, float] | None = None
        out = np.empty(len(FEATURE_DEFS), dtype=np.float32)
        for i, fdef in enumerate(FEATURE_DEFS):
            absent = [f for f in fdef.fields if self._absent(packet, f)]
            if absent:
                if self.missing == "error":
                    alert = packet.get("diaSourceId", packet.get("alertId"))
                    raise FeatureError(
                        f"LSST feature {fdef.name!r} needs {', '.join(absent)}, which alert {alert} lacks "
                        f"(an older schema); set lsst.features.missing to a number to fill it, or drop the feature"
                    )
                for f in absent:
                    self.filled[f"{fdef.name}:{f}"] += 1
                out[i] = float(self.missing)
                continue
            if fdef.name in single:
                out[i] = single[fdef.name]()
            else:
                if derived is None:
                    derived = _history_features(packet)
                out[i] = derived[fdef.name]
        return out


def feature_table() -> str:
    """:data:`FEATURE_DEFS` as a Markdown table (docs/lsst.md holds this text; a test keeps them equal)."""
    rows = ["| # | feature | formula | units | which detections count |", "|---|---|---|---|---|"]
    for i, f in enumerate(FEATURE_DEFS):
        rows.append(f"| {i} | `{f.name}` | {f.formula} | {f.units} | {f.counts} |")
    return "\n".join(rows)
