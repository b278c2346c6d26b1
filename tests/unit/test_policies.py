"""BTSbot follow-up trigger policies: triggers, exclusions, metrics against scikit-learn."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from alertvision.evaluation.policies import (
    PEAK_MAG_BINS,
    POLICIES,
    Policy,
    evaluate_policies,
    policy_metrics,
    source_decisions,
    trigger_index,
)


def table(sources: dict[str, tuple[int, list[tuple[float, float, float]]]]) -> pd.DataFrame:
    """Alerts from {objectId: (label, [(jd, score, magpsf), ...])}."""
    rows = [
        {"objectId": oid, "jd": jd, "label": label, "score": s, "magpsf": m}
        for oid, (label, alerts) in sources.items()
        for jd, s, m in alerts
    ]
    return pd.DataFrame(rows)


# a true that reaches 18.5 only at its third alert, scored high from its first
RISER = [(100.0, 0.9, 18.9), (101.5, 0.9, 18.7), (103.25, 0.9, 18.4), (104.0, 0.9, 18.2)]


def decision(df: pd.DataFrame, policy: str, oid: str) -> pd.Series:
    dec = source_decisions(df, policy)
    return dec.set_index("objectId").loc[oid]


def test_policies_and_bins():
    assert list(POLICIES) == ["bts_p1", "bts_p2", "prod_p1", "prod_p2"]
    assert POLICIES["bts_p2"] == Policy("bts_p2", 2, 0.5, 19.0, 18.5)
    assert POLICIES["prod_p1"] == Policy("prod_p1", 1, 0.85, 19.0, None, production=True)
    assert [n for n, p in POLICIES.items() if p.production] == ["prod_p1", "prod_p2"]
    assert POLICIES["bts_p2"].describe() == (
        ">= 2 alerts with score > 0.5 and magpsf < 19, source seen at magpsf <= 18.5"
    )
    assert PEAK_MAG_BINS.tolist() == [17.0, 17.25, 17.5, 17.75, 18.0, 18.25, 18.5]  # BTSbot's: end at 18.5


def test_riser_trigger_indices_and_delay():
    scores = np.array([a[1] for a in RISER])
    mags = np.array([a[2] for a in RISER])
    assert trigger_index(scores, mags, POLICIES["bts_p1"]) == 1
    assert trigger_index(scores, mags, POLICIES["bts_p2"]) == 2
    assert trigger_index(scores, mags, POLICIES["prod_p1"]) == 0
    assert trigger_index(scores, mags, "prod_p2") == 2

    df = table({"ZTFriser": (1, RISER), "ZTFother": (0, [(100.0, 0.1, 18.0), (101.0, 0.2, 18.1)])})
    row = decision(df, "bts_p2", "ZTFriser")
    assert row["triggered"] and row["included"]
    assert row["trigger_jd"] == 103.25
    assert row["trigger_delay_days"] == pytest.approx(103.25 - 100.0)
    assert decision(df, "bts_p1", "ZTFriser")["trigger_delay_days"] == pytest.approx(1.5)
    assert decision(df, "prod_p1", "ZTFriser")["trigger_delay_days"] == 0.0
    m = policy_metrics(df, "bts_p2")
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (1, 0, 0, 1)
    assert m["trigger_delay_days_median"] == pytest.approx(3.25)
    assert m["trigger_delay_days_mean"] == pytest.approx(3.25)
    assert m["n_triggered_trues"] == 1


def test_trigger_index_never_and_empty():
    assert trigger_index(np.array([0.4, 0.3]), np.array([18.0, 18.0]), "bts_p1") is None
    assert trigger_index(np.array([]), np.array([]), "prod_p1") is None
    # good alerts that are not consecutive still count
    assert trigger_index(np.array([0.9, 0.1, 0.1, 0.6]), np.array([18.0] * 4), "bts_p1") == 3


def test_var_with_one_high_score_is_prod_fp_only():
    var = [(10.0, 0.1, 18.0), (11.0, 0.9, 18.0), (12.0, 0.2, 18.0), (13.0, 0.3, 18.0)]
    df = table({"ZTFvar": (0, var)})
    assert decision(df, "prod_p1", "ZTFvar")["triggered"]
    assert not decision(df, "bts_p1", "ZTFvar")["triggered"]
    prod = policy_metrics(df, "prod_p1")
    bts = policy_metrics(df, "bts_p1")
    assert (prod["fp"], prod["tn"]) == (1, 0)
    assert (bts["fp"], bts["tn"]) == (0, 1)
    # no positives: completeness undefined, purity 0, F1 = 2TP/(2TP+FP+FN) = 0 (as scikit-learn)
    assert prod["purity"] == 0.0 and math.isnan(prod["completeness"]) and prod["f1"] == 0.0
    assert prod["f1"] == f1_score([0], [1], zero_division=np.nan)
    assert math.isnan(prod["trigger_delay_days_median"]) and prod["n_triggered_trues"] == 0


def test_single_alert_source_left_out():
    df = table({"ZTFone": (1, [(1.0, 0.99, 17.0)]), "ZTFtwo": (1, RISER)})
    row = decision(df, "prod_p1", "ZTFone")
    assert row["triggered"]  # the policy fires, but the source is not counted
    assert not row["included"] and row["excluded"] == "fewer than 2 alerts"
    m = policy_metrics(df, "prod_p1")
    assert m["n_sources"] == 2 and m["n_included"] == 1 and m["n_excluded_few_alerts"] == 1
    assert (m["tp"], m["fp"], m["fn"], m["n_trues"]) == (1, 0, 0, 1)
    # a single-alert negative is left out too
    m = policy_metrics(table({"ZTFone": (0, [(1.0, 0.99, 17.0)])}), "prod_p1")
    assert (m["n_included"], m["fp"], m["tn"], m["n_excluded_few_alerts"]) == (0, 0, 0, 1)


def test_faint_true_left_out_faint_negative_kept():
    faint = [(1.0, 0.9, 18.9), (2.0, 0.9, 18.7), (3.0, 0.9, 18.8)]
    df = table({"ZTFfaintTrue": (1, faint), "ZTFfaintVar": (0, faint)})
    dec = source_decisions(df, "bts_p1").set_index("objectId")
    assert dec.loc["ZTFfaintTrue", "peak_mag"] == 18.7
    assert dec.loc["ZTFfaintTrue", "excluded"] == "true fainter than 18.5"
    assert not dec.loc["ZTFfaintTrue", "included"]
    assert dec.loc["ZTFfaintVar", "included"] and dec.loc["ZTFfaintVar", "excluded"] == ""
    m = policy_metrics(df, "bts_p1")
    assert (m["n_included"], m["n_excluded_faint_trues"], m["n_trues"]) == (1, 1, 0)
    assert (m["tp"], m["fp"], m["fn"]) == (0, 1, 0)


def test_thresholds_are_strict_and_peak_inclusive():
    mags = np.array([18.0, 18.0, 18.0])
    assert trigger_index(np.array([0.5, 0.5, 0.5]), mags, "bts_p1") is None
    assert trigger_index(np.array([0.5, 0.5000001, 0.51]), mags, "bts_p1") == 2
    assert trigger_index(np.array([0.85, 0.85]), mags[:2], "prod_p1") is None
    hi = np.array([0.9, 0.9, 0.9])
    assert trigger_index(hi, np.array([19.0, 19.0, 19.0]), "bts_p1") is None
    assert trigger_index(hi, np.array([19.0, 18.99, 18.99]), "bts_p1") == 2
    assert trigger_index(hi, np.array([18.6, 18.6, 18.5]), "bts_p2") == 2
    assert trigger_index(hi, np.array([18.6, 18.6, 18.5000001]), "bts_p2") is None
    assert trigger_index(hi, np.array([18.6, 18.5, 18.6]), "prod_p2") == 1
    # a true peaking exactly at 18.5 is kept
    df = table({"ZTFedge": (1, [(1.0, 0.9, 18.6), (2.0, 0.9, 18.5)])})
    assert decision(df, "bts_p2", "ZTFedge")["included"]
    assert policy_metrics(df, "bts_p2")["tp"] == 1


def random_table(seed: int, n_sources: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_sources):
        k = int(rng.integers(1, 9))
        label = int(rng.integers(0, 2))
        jd = 2459000.0 + np.sort(rng.uniform(0, 60, k))
        # positives score higher on average, so the policies fire on some of each
        scores = np.clip(rng.beta(2 + 3 * label, 3, k), 0, 1)
        mags = rng.uniform(17, 20, k)
        rows += [
            {"objectId": f"ZTF{i:05d}", "jd": j, "label": label, "score": s, "magpsf": m}
            for j, s, m in zip(jd, scores, mags, strict=True)
        ]
    return pd.DataFrame(rows)


def reference_decisions(df: pd.DataFrame, policy: Policy) -> dict[str, tuple[int, bool, bool, float]]:
    """Per source, by a plain loop: (label, included, triggered, delay)."""
    out = {}
    for oid, g in df.groupby("objectId"):
        g = g.sort_values("jd", kind="mergesort")
        label = int(g["label"].iloc[0])
        n_good, seen_peak, trig = 0, False, None
        for j, s, m in zip(g["jd"], g["score"], g["magpsf"], strict=True):
            n_good += s > policy.score_threshold and m < policy.mag_limit
            seen_peak |= policy.peak_limit is None or m <= policy.peak_limit
            if n_good >= policy.min_alerts and seen_peak:
                trig = j
                break
        included = len(g) >= 2 and not (label == 1 and g["magpsf"].min() > 18.5)
        delay = trig - g["jd"].iloc[0] if trig is not None else np.nan
        out[oid] = (label, included, trig is not None, delay)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", list(POLICIES))
def test_metrics_match_sklearn_and_reference(seed, name):
    df = random_table(seed)
    dec = source_decisions(df, name)
    ref = reference_decisions(df, POLICIES[name])
    assert dec["objectId"].tolist() == sorted(ref)
    got = {r.objectId: (r.label, r.included, r.triggered, r.trigger_delay_days) for r in dec.itertuples()}
    for oid, (label, inc, trig, delay) in ref.items():
        g = got[oid]
        assert g[:3] == (label, inc, trig), oid
        assert (math.isnan(g[3]) and math.isnan(delay)) or g[3] == pytest.approx(delay), oid

    inc = dec[dec["included"]]
    y_true, y_pred = inc["label"].to_numpy(), inc["triggered"].to_numpy().astype(int)
    assert 0 < y_pred.sum() < len(y_pred) and 0 < y_true.sum() < len(y_true)  # a non-trivial table
    m = policy_metrics(df, name)
    assert m["policy"] == name
    assert m["completeness"] == pytest.approx(recall_score(y_true, y_pred, zero_division=np.nan))
    assert m["purity"] == pytest.approx(precision_score(y_true, y_pred, zero_division=np.nan))
    assert m["f1"] == pytest.approx(f1_score(y_true, y_pred, zero_division=np.nan))
    assert m["tp"] + m["fp"] + m["fn"] + m["tn"] == m["n_included"] == len(inc)
    assert m["n_included"] + m["n_excluded_few_alerts"] + m["n_excluded_faint_trues"] == m["n_sources"]
    delays = [d for (lab, i, t, d) in ref.values() if lab == 1 and i and t]
    assert m["n_triggered_trues"] == len(delays) == m["tp"]
    assert m["trigger_delay_days_median"] == pytest.approx(float(np.median(delays)))
    assert m["trigger_delay_days_mean"] == pytest.approx(float(np.mean(delays)))
    bins = m["completeness_by_peak_mag"]
    assert sum(b["n_trues"] for b in bins) == m["n_trues"]  # included trues peak in [17, 18.5]


@pytest.mark.parametrize("seed", [0, 5])
def test_shuffled_rows_give_same_results(seed):
    df = random_table(seed, 150)
    shuffled = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    assert not shuffled["jd"].is_monotonic_increasing
    for name in POLICIES:
        pd.testing.assert_frame_equal(source_decisions(df, name), source_decisions(shuffled, name))
        a, b = policy_metrics(df, name), policy_metrics(shuffled, name)
        assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    # the hand-built riser, reversed
    riser = table({"ZTFriser": (1, RISER)})
    assert decision(riser.iloc[::-1], "bts_p2", "ZTFriser")["trigger_jd"] == 103.25


def test_completeness_by_peak_mag():
    two_alerts = lambda s, m: [(1.0, s, m + 0.3), (2.0, s, m)]  # noqa: E731
    df = table(
        {
            "A": (1, two_alerts(0.9, 17.1)),  # 17.0-17.25, triggered
            "B": (1, two_alerts(0.1, 17.0)),  # 17.0-17.25, not triggered (peak on the lower edge)
            "C": (1, two_alerts(0.9, 17.25)),  # 17.25-17.5 (peak on the upper edge of the first bin)
            "D": (1, two_alerts(0.9, 18.5)),  # 18.25-18.5: the last bin is closed, as numpy's histogram
            "G": (1, two_alerts(0.9, 18.3)),  # 18.25-18.5
            "E": (0, two_alerts(0.1, 17.6)),  # negatives are not binned
            "F": (1, two_alerts(0.9, 16.5)),  # brighter than 17: counted, in no bin
        }
    )
    m = policy_metrics(df, "bts_p1")
    bins = m["completeness_by_peak_mag"]
    edges = PEAK_MAG_BINS.tolist()
    assert [(b["lo"], b["hi"]) for b in bins] == list(zip(edges[:-1], edges[1:], strict=True))
    assert bins[0] == {"lo": 17.0, "hi": 17.25, "n_trues": 2, "n_triggered": 1, "completeness": 0.5}
    assert (bins[1]["n_trues"], bins[1]["completeness"]) == (1, 1.0)
    assert bins[2]["n_trues"] == 0 and math.isnan(bins[2]["completeness"])
    assert len(bins) == 6 and (bins[5]["lo"], bins[5]["hi"], bins[5]["n_trues"]) == (18.25, 18.5, 2)
    counts, _ = np.histogram([17.1, 17.0, 17.25, 18.5, 16.5, 18.3], bins=PEAK_MAG_BINS)  # BTSbot bins with numpy
    assert [b["n_trues"] for b in bins] == counts.tolist()
    assert m["n_trues"] == 6 and m["completeness"] == pytest.approx(5 / 6)

    # JSON-serialisable with plain Python types once NaN becomes null
    def nan_to_none(x):
        if isinstance(x, dict):
            return {k: nan_to_none(v) for k, v in x.items()}
        if isinstance(x, list):
            return [nan_to_none(v) for v in x]
        return None if isinstance(x, float) and math.isnan(x) else x

    text = json.dumps(nan_to_none(m), allow_nan=False)
    assert json.loads(text)["completeness_by_peak_mag"][2]["completeness"] is None
    for b in bins:
        assert all(type(v) in (int, float) for v in b.values())


def test_no_triggers():
    low = [(1.0, 0.1, 18.0), (2.0, 0.2, 17.9)]
    df = table({"T1": (1, low), "T2": (1, low), "V1": (0, low)})
    for name in POLICIES:
        m = policy_metrics(df, name)
        assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (0, 0, 2, 1)
        assert m["completeness"] == 0.0 and m["f1"] == 0.0 and math.isnan(m["purity"])
        assert math.isnan(m["trigger_delay_days_median"]) and math.isnan(m["trigger_delay_days_mean"])
        assert m["n_triggered_trues"] == 0
        y_true, y_pred = np.array([1, 1, 0]), np.zeros(3, dtype=int)
        assert m["f1"] == f1_score(y_true, y_pred, zero_division=np.nan)
        assert math.isnan(precision_score(y_true, y_pred, zero_division=np.nan))
    # no positives and no triggers: every ratio undefined
    m = policy_metrics(table({"V1": (0, low)}), "bts_p1")
    assert all(math.isnan(m[k]) for k in ("completeness", "purity", "f1"))


def test_empty_table():
    df = pd.DataFrame({c: pd.Series(dtype=float) for c in ("jd", "label", "score", "magpsf")})
    df["objectId"] = pd.Series(dtype=object)
    m = policy_metrics(df, "bts_p1")
    assert m["n_sources"] == 0 and m["tp"] == 0 and math.isnan(m["completeness"])


def test_bad_input_raises():
    df = table({"ZTFa": (1, RISER)})
    with pytest.raises(ValueError, match="magpsf"):
        source_decisions(df.drop(columns="magpsf"), "bts_p1")
    with pytest.raises(ValueError, match="score.*label|label.*score"):
        policy_metrics(df.drop(columns=["score", "label"]), "bts_p1")
    bad = df.copy()
    bad.loc[2, "score"] = np.nan
    with pytest.raises(ValueError, match=r"'score'.*ZTFa"):
        policy_metrics(bad, "prod_p1")
    bad = df.copy()
    bad.loc[1, "magpsf"] = np.nan
    with pytest.raises(ValueError, match=r"'magpsf'.*ZTFa"):
        source_decisions(bad, "bts_p2")
    with pytest.raises(ValueError, match="bts_p1, bts_p2, prod_p1, prod_p2"):
        evaluate_policies(df, ["bts_p1", "nope"])
    with pytest.raises(ValueError, match="nope"):
        source_decisions(df, "nope")


def test_evaluate_policies():
    df = random_table(7, 100)
    out = evaluate_policies(df)
    assert list(out) == list(POLICIES)
    assert json.dumps(out["prod_p2"]) == json.dumps(policy_metrics(df, POLICIES["prod_p2"]))
    assert list(evaluate_policies(df, ["prod_p1"])) == ["prod_p1"]
    # a p2 policy never triggers where its p1 does not, and never earlier
    for p1, p2 in (("bts_p1", "bts_p2"), ("prod_p1", "prod_p2")):
        d1, d2 = source_decisions(df, p1), source_decisions(df, p2)
        assert not (d2["triggered"] & ~d1["triggered"]).any()
        both = d1["triggered"] & d2["triggered"]
        assert (d2.loc[both, "trigger_jd"] >= d1.loc[both, "trigger_jd"]).all()
