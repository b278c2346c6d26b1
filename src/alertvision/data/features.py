"""The 25 metadata features of BTSbot, the alert cuts, and the features derived per source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

#: BTSbot's metadata features, in model input order.
METADATA_FEATURES: tuple[str, ...] = (
    "sgscore1",
    "distpsnr1",
    "sgscore2",
    "distpsnr2",
    "fwhm",
    "magpsf",
    "sigmapsf",
    "chipsf",
    "ra",
    "dec",
    "diffmaglim",
    "ndethist",
    "nmtchps",
    "age",
    "days_since_peak",
    "days_to_peak",
    "peakmag_so_far",
    "new_drb",
    "ncovhist",
    "nnotdet",
    "chinr",
    "sharpnr",
    "scorr",
    "sky",
    "maxmag_so_far",
)

#: Features computed from a source's alerts up to the current one.
DERIVED_FEATURES: tuple[str, ...] = (
    "age",
    "nnotdet",
    "peakmag_so_far",
    "maxmag_so_far",
    "days_since_peak",
    "days_to_peak",
)


#: ``data.cuts.isdiffpos``: the spellings of a positive subtraction each mode accepts (compared lower-cased
#: for ``lenient``; ``btsbot`` is BTSbot's ``isdiffpos == 't'``, exactly).
ISDIFFPOS_MODES: dict[str, tuple[str, ...]] = {"btsbot": ("t",), "lenient": ("t", "1", "true")}
#: Why an alert fails the cuts, in the order they are tested (an alert is counted under the first it fails).
CUT_REASONS = ("cut_programid", "cut_isdiffpos", "cut_isdiffpos_spelling", "cut_fid", "cut_sgscore")


@dataclass(frozen=True)
class Cuts:
    """BTSbot's alert cuts with the settings of ``data.cuts``: ``programids`` (the ZTF programs kept;
    BTSbot queries the public survey, 1, only) and ``isdiffpos`` (``btsbot``: only the exact string
    ``'t'`` is a positive subtraction; ``lenient``: ``t``, ``1`` or ``true`` in any case)."""

    programids: tuple[int, ...] = (1,)
    isdiffpos: str = "btsbot"

    def __post_init__(self) -> None:
        if self.isdiffpos not in ISDIFFPOS_MODES:
            raise ValueError(
                f"config key data.cuts.isdiffpos: {self.isdiffpos!r} is not one of {', '.join(ISDIFFPOS_MODES)}"
            )
        object.__setattr__(self, "programids", tuple(sorted({int(p) for p in self.programids})))

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> "Cuts":
        """The cuts of a ``data.cuts`` block (or of an export's ``alertvision.cuts``); None: the defaults."""
        spec = spec or {}
        return cls(tuple(spec.get("programids", (1,))), str(spec.get("isdiffpos", "btsbot")))

    def spec(self) -> dict[str, Any]:
        """The settings as a ``data.cuts`` block (JSON-ready)."""
        return {"programids": list(self.programids), "isdiffpos": self.isdiffpos}

    def reason(
        self, isdiffpos: object, fid: object, sgscore1: object, sgscore2: object, programid: object
    ) -> str | None:
        """The first of :data:`CUT_REASONS` an alert's fields fail (None: it passes). A missing ``programid``
        fails the programid cut (BTSbot's query selects on it)."""
        try:
            program = int(programid)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            program = None
        if program not in self.programids:
            return "cut_programid"
        text = str(isdiffpos)
        if text.lower() not in ISDIFFPOS_MODES["lenient"]:
            return "cut_isdiffpos"
        if self.isdiffpos == "btsbot" and text != "t":
            return "cut_isdiffpos_spelling"
        if fid not in (1, 2):
            return "cut_fid"

        def score(x: object) -> float:
            return float("nan") if x is None else float(x)  # type: ignore[arg-type]

        if not (score(sgscore1) >= 0 or score(sgscore2) >= 0):
            return "cut_sgscore"
        return None

    def mask(self, df: pd.DataFrame) -> pd.Series:
        """Which rows of a table (columns isdiffpos, fid, sgscore1, sgscore2, programid) pass."""
        text = df["isdiffpos"].astype(str)
        if self.isdiffpos == "btsbot":
            positive = text == "t"
        else:
            positive = text.str.lower().isin(ISDIFFPOS_MODES["lenient"])
        program = pd.to_numeric(df["programid"], errors="coerce").isin(self.programids)
        return program & positive & df["fid"].isin([1, 2]) & ((df["sgscore1"] >= 0) | (df["sgscore2"] >= 0))


#: The study's cuts: BTSbot's (``data.cuts`` defaults).
BTSBOT_CUTS = Cuts()


def cut_mask(df: pd.DataFrame, cuts: Cuts = BTSBOT_CUTS) -> pd.Series:
    """BTSbot's cuts: the public survey, positive subtraction, g or r band, a PS1 counterpart score for
    either neighbour (see :class:`Cuts`)."""
    return cuts.mask(df)


def passes_cuts(
    isdiffpos: object, fid: object, sgscore1: object, sgscore2: object, programid: object, cuts: Cuts = BTSBOT_CUTS
) -> bool:
    """:func:`cut_mask` for one alert's fields (None counts as missing)."""
    return cuts.reason(isdiffpos, fid, sgscore1, sgscore2, programid) is None


def derive_source_features(df: pd.DataFrame, history: pd.DataFrame | None = None) -> pd.DataFrame:
    """Add the derived features, computed per source over its alerts in time order.

    ``history`` (columns objectId, jd, fid, magpsf) holds earlier detections that are not alerts of
    ``df``, such as a packet's ``prv_candidates``: they take part in the running peak and first
    detection like alerts do, but get no row of their own. Rows of ``history`` with the
    (objectId, jd, fid) of an alert are ignored.

    Only a source's alerts up to and including the current one are used (no look-ahead):
    ``age = jd - min(jdstarthist, first jd)``, ``nnotdet = ncovhist - ndethist``,
    ``peakmag_so_far`` / ``maxmag_so_far`` = min / max magpsf so far, ``days_since_peak =
    jd - jd(brightest so far)``, ``days_to_peak = jd(brightest so far) - min(jdstarthist, first jd)``.
    The brightest alert so far is the first one to reach the running minimum magnitude.
    Needs columns objectId, jd, magpsf, jdstarthist, ncovhist, ndethist. Row order is kept.
    """
    out = df.copy()
    if history is not None and len(history):
        return _derive_with_history(out, history)
    order = np.lexsort((out["jd"].to_numpy(), out["objectId"].to_numpy()))
    s = out.iloc[order]
    g = s.groupby("objectId", sort=False)
    peak = g["magpsf"].cummin()
    prev_peak = peak.groupby(s["objectId"], sort=False).shift(1)
    new_peak = prev_peak.isna() | (s["magpsf"] < prev_peak)
    jd_peak = s["jd"].where(new_peak).groupby(s["objectId"], sort=False).ffill()
    first_jd = g["jd"].cummin()
    jd_first = np.minimum(s["jdstarthist"].to_numpy(dtype=float), first_jd.to_numpy(dtype=float))
    derived = pd.DataFrame(index=s.index)
    derived["peakmag_so_far"] = peak
    derived["maxmag_so_far"] = g["magpsf"].cummax()
    derived["age"] = s["jd"].to_numpy() - jd_first
    derived["days_since_peak"] = s["jd"] - jd_peak
    derived["days_to_peak"] = jd_peak.to_numpy() - jd_first
    derived["nnotdet"] = s["ncovhist"] - s["ndethist"]
    for col in DERIVED_FEATURES:
        out[col] = derived[col].reindex(out.index).astype(np.float64)
    return out


def _derive_with_history(df: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    def keys(frame: pd.DataFrame) -> pd.Series:
        return (
            frame["objectId"].astype(str)
            + "|"
            + frame["jd"].astype(float).round(6).astype(str)
            + "|"
            + frame["fid"].astype(int).astype(str)
        )

    hist = history.loc[history["objectId"].isin(set(df["objectId"])), ["objectId", "jd", "fid", "magpsf"]]
    hist = hist.dropna(subset=["jd", "magpsf"])
    hist = hist[~keys(hist).isin(set(keys(df)))].drop_duplicates()
    hist = hist.assign(jdstarthist=np.inf, ncovhist=np.nan, ndethist=np.nan)
    n = len(df)
    union = pd.concat([df.reset_index(drop=True), hist.reset_index(drop=True)], ignore_index=True)
    derived = derive_source_features(union).iloc[:n]
    derived.index = df.index
    out = df.copy()
    for col in DERIVED_FEATURES:
        out[col] = derived[col]
    return out


def derive_alert_features(
    jd: float,
    fid: int,
    magpsf: float,
    jdstarthist: float,
    ncovhist: float,
    ndethist: float,
    history: Iterable[tuple[float, int, float]],
) -> dict[str, float]:
    """The derived features of one alert from its own earlier detections (``history``: (jd, fid, magpsf),
    e.g. a packet's ``prv_candidates``), as :func:`derive_source_features` computes them for a source
    whose only alert is this one: the same values, without pandas (the scoring path of a live stream).

    History rows at the alert's (jd rounded to 1e-6, fid), without a magnitude, repeated, or not earlier
    than the alert are left out.
    """
    key = (round(float(jd), 6), int(fid))
    earlier = sorted(
        {(float(h_jd), int(h_fid), float(h_mag)) for h_jd, h_fid, h_mag in history if (round(h_jd, 6), h_fid) != key}
    )
    earlier = [h for h in earlier if h[0] < jd and h[2] == h[2]]  # NaN != NaN
    peak = max_mag = jd_peak = np.nan
    for h_jd, _, h_mag in earlier:  # the running minimum; the first to reach it is the peak
        if not peak <= h_mag:
            peak, jd_peak = h_mag, h_jd
        max_mag = h_mag if not max_mag >= h_mag else max_mag
    if magpsf == magpsf:
        if not peak <= magpsf:
            jd_peak = jd
        peak = magpsf if not peak <= magpsf else peak
        max_mag = magpsf if not max_mag >= magpsf else max_mag
    else:  # pandas' cummin/cummax give NaN at a NaN row; the peak stays the last one
        peak = max_mag = np.nan
        jd_peak = jd if not earlier else jd_peak
    jd_first = float(np.minimum(float(jdstarthist), earlier[0][0] if earlier else jd))  # NaN stays NaN
    return {
        "age": jd - jd_first,
        "nnotdet": float(ncovhist) - float(ndethist),
        "peakmag_so_far": peak,
        "maxmag_so_far": max_mag,
        "days_since_peak": jd - jd_peak,
        "days_to_peak": jd_peak - jd_first,
    }


#: Per raw feature: where a packet holds it and its units (the ZTF alert schema's).
RAW_FEATURES: dict[str, tuple[str, str]] = {
    "sgscore1": ("candidate.sgscore1", "star/galaxy score of the closest PS1 source, 0 galaxy to 1 star; -999: none"),
    "distpsnr1": ("candidate.distpsnr1", "arcsec: distance to the closest PS1 source; -999: none"),
    "sgscore2": ("candidate.sgscore2", "star/galaxy score of the second-closest PS1 source; -999: none"),
    "distpsnr2": ("candidate.distpsnr2", "arcsec: distance to the second-closest PS1 source; -999: none"),
    "fwhm": ("candidate.fwhm", "pixels (1.01 arcsec each): full width at half maximum"),
    "magpsf": ("candidate.magpsf", "mag (AB): PSF-fit magnitude of the difference image"),
    "sigmapsf": ("candidate.sigmapsf", "mag: 1-sigma uncertainty of magpsf"),
    "chipsf": ("candidate.chipsf", "reduced chi-square of the PSF fit"),
    "ra": ("candidate.ra", "deg (J2000)"),
    "dec": ("candidate.dec", "deg (J2000)"),
    "diffmaglim": ("candidate.diffmaglim", "mag: 5-sigma limit of the difference image"),
    "ndethist": ("candidate.ndethist", "count: detections within 1.5 arcsec so far (same field and readout channel)"),
    "nmtchps": ("candidate.nmtchps", "count: PS1 sources within 30 arcsec"),
    "new_drb": ("classifications.braai", "0 to 1: deep real-bogus score; candidate.drb where the packet has none"),
    "ncovhist": ("candidate.ncovhist", "count: times the position was covered so far (any field, readout channel)"),
    "chinr": ("candidate.chinr", "DAOPhot chi of the nearest reference-image source"),
    "sharpnr": ("candidate.sharpnr", "DAOPhot sharp of the nearest reference-image source"),
    "scorr": ("candidate.scorr", "peak-pixel signal-to-noise in the detection (Scorr) image"),
    "sky": ("candidate.sky", "DN: local sky background"),
}

_DRB_PATH = ["candidate", "drb"]
#: Per derived feature: its formula over the quantities of :func:`feature_contract` and its units.
DERIVED_FORMULAS: dict[str, tuple[str, str]] = {
    "age": ("jd - first_jd", "days since the first detection"),
    "nnotdet": ("ncovhist - ndethist", "count: coverages without a detection"),
    "peakmag_so_far": ("peak_mag", "mag: brightest magpsf so far"),
    "maxmag_so_far": ("max_mag", "mag: faintest magpsf so far"),
    "days_since_peak": ("jd - jd_peak", "days since the brightest detection so far"),
    "days_to_peak": ("jd_peak - first_jd", "days from the first detection to the brightest so far"),
}


def feature_contract(training_history: str | None = None) -> dict:
    """The 25 features as a broker computes them from one packet (:func:`derive_alert_features`), in a
    machine-readable form: where each raw one is read, each derived one's formula over named quantities,
    the history those quantities run over, units, and what happens with no history or a missing value.
    ``training_history``: what the training set's derived features ran over (its manifest's ``history``)."""
    return {
        "order": list(METADATA_FEATURES),
        "dtype": "each value computed in float64 (Python float) from the packet, then the vector cast to float32",
        "missing": "a field absent, null or not a number is NaN; non-finite features are filled inside the graph "
        "(alertvision.metadata_fill)",
        "raw": {
            name: {"path": path.split("."), "units": units, **({"else": _DRB_PATH} if name == "new_drb" else {})}
            for name, (path, units) in RAW_FEATURES.items()
        },
        "derived": {name: {"formula": f, "units": u} for name, (f, u) in DERIVED_FORMULAS.items()},
        "alert": {name: ["candidate", name] for name in ("jd", "fid", "magpsf", "jdstarthist", "ncovhist", "ndethist")},
        "history": {
            "scope": "the packet alone: its candidate and its prv_candidates (no state kept across packets)",
            "from": "prv_candidates",
            "filters": "all",
            "require": ["jd", "fid", "magpsf"],
            "require_note": "entries whose jd, fid or magpsf is null or not a number are left out: non-detections "
            "(magpsf null) count only through ncovhist",
            "jd_decimals": 6,
            "exclude_same_as_alert": ["jd", "fid"],
            "exclude_note": "an entry at the alert's (jd rounded to 6 decimals, fid) is the alert itself: left out",
            "unique": ["jd", "fid", "magpsf"],
            "before_alert": {"field": "jd", "op": "<"},
            "before_note": "entries with jd (rounded) < the alert's jd (not rounded) only",
            "order": ["jd", "fid", "magpsf"],
            "so_far": "the kept entries in that order, then the alert itself (jd, fid, magpsf of its candidate)",
        },
        "quantities": {
            "first_detection_jd": {"reduce": "first", "take": "jd", "over": "so_far"},
            "peak_mag": {"reduce": "min", "take": "magpsf", "over": "so_far"},
            "max_mag": {"reduce": "max", "take": "magpsf", "over": "so_far"},
            "jd_peak": {"reduce": "first_argmin", "of": "magpsf", "take": "jd", "over": "so_far"},
            "first_jd": {"formula": "minimum(jdstarthist, first_detection_jd)"},
        },
        "formula_language": "names are the alert's fields (alert) and the quantities; '-' subtracts; minimum is "
        "numpy.minimum (NaN wins)",
        "alert_magpsf_missing": {
            "peak_mag": "NaN",
            "max_mag": "NaN",
            "jd_peak": "first_argmin over the earlier detections; the alert's jd when there are none",
        },
        "no_history": "so_far is the alert alone: first_jd = minimum(jdstarthist, jd), peak_mag = max_mag = magpsf, "
        "jd_peak = jd (days_since_peak 0, days_to_peak = jd - first_jd)",
        "training_history": training_history,
        "training_history_note": "alerts: the training set's derived features ran over the source's alert packets "
        "so far; prv_candidates: those plus their prv_candidates detections; a broker scoring one packet uses "
        "the packet's own prv_candidates as above",
    }
