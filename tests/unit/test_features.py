"""Derived features per source, no look-ahead, and BTSbot's cuts."""

from __future__ import annotations

import pandas as pd
import pytest

from alertvision.data.features import (
    BTSBOT_CUTS,
    METADATA_FEATURES,
    Cuts,
    cut_mask,
    derive_source_features,
    passes_cuts,
)


def test_25_features_in_btsbot_order():
    assert len(METADATA_FEATURES) == 25 == len(set(METADATA_FEATURES))
    assert METADATA_FEATURES[0] == "sgscore1" and METADATA_FEATURES[-1] == "maxmag_so_far"


def test_derived_features_use_only_alerts_so_far():
    # one source, rows deliberately out of time order; a second source interleaved
    df = pd.DataFrame(
        {
            "objectId": ["A", "B", "A", "A", "A"],
            "jd": [13.0, 5.0, 10.0, 11.0, 12.0],
            "magpsf": [17.5, 19.0, 19.0, 18.0, 18.0],
            "jdstarthist": [9.0, 4.0, 9.0, 9.0, 9.0],
            "ncovhist": [50, 10, 47, 48, 49],
            "ndethist": [5, 1, 2, 3, 4],
        }
    )
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
    df = pd.DataFrame(
        {
            "isdiffpos": ["t", "f", "t", "t", "1", "t", "t", "T", "true"],
            "fid": [1, 2, 3, 2, 2, 1, 1, 1, 2],
            "sgscore1": [0.1, 0.1, 0.1, -999.0, 0.5, -999.0, 0.1, 0.1, 0.1],
            "sgscore2": [-999.0, 0.2, 0.2, 0.3, 0.1, -999.0, 0.1, 0.1, 0.1],
            "programid": [1, 1, 1, 1, 1, 1, 3, 1, 1],
        }
    )
    # BTSbot's: programid 1 and isdiffpos == 't' exactly; lenient spellings and programid 3 are cut
    assert list(cut_mask(df)) == [True, False, False, True, False, False, False, False, False]
    lenient = Cuts((1, 3), "lenient")
    assert list(cut_mask(df, lenient)) == [True, False, False, True, True, False, True, True, True]
    reasons = [BTSBOT_CUTS.reason(*r) for r in df[["isdiffpos", "fid", "sgscore1", "sgscore2", "programid"]].values]
    assert reasons == [
        None,
        "cut_isdiffpos",
        "cut_fid",
        None,
        "cut_isdiffpos_spelling",
        "cut_sgscore",
        "cut_programid",
        "cut_isdiffpos_spelling",
        "cut_isdiffpos_spelling",
    ]
    with pytest.raises(ValueError, match="data.cuts.isdiffpos"):
        Cuts((1,), "loose")


def test_the_cut_settings_come_from_the_config():
    from alertvision.config import validate_config

    config = validate_config({})
    assert config["data"]["cuts"] == {"programids": [1], "isdiffpos": "btsbot"}
    assert Cuts.from_spec(config["data"]["cuts"]) == BTSBOT_CUTS
    config = validate_config({"data": {"cuts": {"programids": [2, 1], "isdiffpos": "lenient"}}})
    assert Cuts.from_spec(config["data"]["cuts"]).spec() == {"programids": [1, 2], "isdiffpos": "lenient"}


def test_history_detections_count_as_earlier_alerts_but_get_no_row():
    alerts = pd.DataFrame(
        {
            "objectId": ["A", "A"],
            "jd": [20.0, 22.0],
            "fid": [1, 2],
            "magpsf": [18.0, 18.5],
            "jdstarthist": [15.0, 15.0],
            "ncovhist": [9, 10],
            "ndethist": [3, 4],
        }
    )
    # prv_candidates: an earlier brighter detection, a copy of the first alert, one after both alerts
    history = pd.DataFrame(
        {
            "objectId": ["A", "A", "A", "B"],
            "jd": [14.0, 20.0, 30.0, 1.0],
            "fid": [2, 1, 1, 1],
            "magpsf": [17.0, 12.0, 10.0, 5.0],
        }
    )
    out = derive_source_features(alerts, history)
    assert len(out) == 2
    assert list(out["peakmag_so_far"]) == [17.0, 17.0]  # the copy at jd 20 (mag 12) is ignored
    assert list(out["maxmag_so_far"]) == [18.0, 18.5]  # nothing after jd 22 leaks in
    assert list(out["age"]) == [6.0, 8.0]  # first detection at jd 14 < jdstarthist 15
    assert list(out["days_since_peak"]) == [6.0, 8.0] and list(out["days_to_peak"]) == [0.0, 0.0]
    without = derive_source_features(alerts)
    assert list(without["peakmag_so_far"]) == [18.0, 18.0] and list(without["age"]) == [5.0, 7.0]


@pytest.mark.parametrize(
    "row",
    [
        ("t", 1, 0.5, -99.0, 1),
        ("f", 1, 0.5, 0.5, 1),
        ("1", 2, -1.0, 0.0, 1),
        ("TRUE", 2, 0.0, 0.0, 1),
        ("t", 3, 0.5, 0.5, 1),
        ("t", 2, -1.0, -1.0, 1),
        ("t", 1, None, 0.2, 1),
        ("t", 1, None, None, 1),
        ("t", 1, 0.5, 0.5, 2),
        ("t", 1, 0.5, 0.5, None),
    ],
)
@pytest.mark.parametrize("cuts", [BTSBOT_CUTS, Cuts((1, 2), "lenient")])
def test_scalar_cut_agrees_with_the_table_cut(row, cuts):
    df = pd.DataFrame([row], columns=["isdiffpos", "fid", "sgscore1", "sgscore2", "programid"]).astype(
        {"sgscore1": float, "sgscore2": float}
    )
    assert passes_cuts(*row, cuts=cuts) == bool(cut_mask(df, cuts).iloc[0])
