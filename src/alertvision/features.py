"""The 25 metadata features of BTSbot, the alert cuts, and the features derived per source."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: BTSbot's metadata features, in model input order.
METADATA_FEATURES: tuple[str, ...] = (
    "sgscore1", "distpsnr1", "sgscore2", "distpsnr2", "fwhm", "magpsf", "sigmapsf", "chipsf",
    "ra", "dec", "diffmaglim", "ndethist", "nmtchps", "age", "days_since_peak", "days_to_peak",
    "peakmag_so_far", "new_drb", "ncovhist", "nnotdet", "chinr", "sharpnr", "scorr", "sky",
    "maxmag_so_far",
)

#: Features computed from a source's alerts up to the current one.
DERIVED_FEATURES: tuple[str, ...] = (
    "age", "nnotdet", "peakmag_so_far", "maxmag_so_far", "days_since_peak", "days_to_peak",
)


def cut_mask(df: pd.DataFrame) -> pd.Series:
    """BTSbot's cuts: positive subtraction, g or r band, a PS1 counterpart score for either neighbour."""
    isdiffpos = df["isdiffpos"].astype(str).str.lower().isin(["t", "1", "true"])
    return (
        isdiffpos
        & df["fid"].isin([1, 2])
        & ((df["sgscore1"] >= 0) | (df["sgscore2"] >= 0))
    )


def derive_source_features(df: pd.DataFrame) -> pd.DataFrame:
    """Add the derived features, computed per source over its alerts in time order.

    Only a source's alerts up to and including the current one are used (no look-ahead):
    ``age = jd - min(jdstarthist, first jd)``, ``nnotdet = ncovhist - ndethist``,
    ``peakmag_so_far`` / ``maxmag_so_far`` = min / max magpsf so far, ``days_since_peak =
    jd - jd(brightest so far)``, ``days_to_peak = jd(brightest so far) - min(jdstarthist, first jd)``.
    The brightest alert so far is the first one to reach the running minimum magnitude.
    Needs columns objectId, jd, magpsf, jdstarthist, ncovhist, ndethist. Row order is kept.
    """
    out = df.copy()
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
