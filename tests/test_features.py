"""Derived features per source, no look-ahead, and BTSbot's cuts."""

from __future__ import annotations

import pandas as pd
import pytest

from alertvision.features import METADATA_FEATURES, cut_mask, derive_source_features


def test_25_features_in_btsbot_order():
    assert len(METADATA_FEATURES) == 25 == len(set(METADATA_FEATURES))
    assert METADATA_FEATURES[0] == "sgscore1" and METADATA_FEATURES[-1] == "maxmag_so_far"


def test_derived_features_use_only_alerts_so_far():
    # one source, rows deliberately out of time order; a second source interleaved
    df = pd.DataFrame({
        "objectId": ["A", "B", "A", "A", "A"],
        "jd": [13.0, 5.0, 10.0, 11.0, 12.0],
        "magpsf": [17.5, 19.0, 19.0, 18.0, 18.0],
        "jdstarthist": [9.0, 4.0, 9.0, 9.0, 9.0],
        "ncovhist": [50, 10, 47, 48, 49],
        "ndethist": [5, 1, 2, 3, 4],
    })
    out = derive_source_features(df).set_index(["objectId", "jd"])
    a = out.loc["A"]
    assert list(a.loc[[10.0, 11.0, 12.0, 13.0], "peakmag_so_far"]) == [19.0, 18.0, 18.0, 17.5]
    assert list(a.loc[[10.0, 11.0, 12.0, 13.0], "maxmag_so_far"]) == [19.0, 19.0, 19.0, 19.0]
    # age from min(jdstarthist, first jd) = 9
    assert list(a.loc[[10.0, 13.0], "age"]) == [1.0, 4.0]
    # the brightest so far at jd 12 is the first alert to reach 18.0 (jd 11), not the tie at jd 12
    assert a.loc[12.0, "days_since_peak"] == pytest.approx(1.0)
    assert a.loc[12.0, "days_to_peak"] == pytest.approx(2.0)
    assert a.loc[13.0, "days_since_peak"] == 0.0 and a.loc[13.0, "days_to_peak"] == pytest.approx(4.0)
    assert a.loc[10.0, "nnotdet"] == 45
    b = out.loc["B"].iloc[0]
    assert b["age"] == pytest.approx(1.0) and b["peakmag_so_far"] == 19.0
    # row order of the input is kept
    assert list(derive_source_features(df)["jd"]) == list(df["jd"])


def test_cuts():
    df = pd.DataFrame({
        "isdiffpos": ["t", "f", "t", "t", "1", "t"],
        "fid": [1, 2, 3, 2, 2, 1],
        "sgscore1": [0.1, 0.1, 0.1, -999.0, 0.5, -999.0],
        "sgscore2": [-999.0, 0.2, 0.2, 0.3, 0.1, -999.0],
    })
    assert list(cut_mask(df)) == [True, False, False, True, True, False]
