"""Calibration (temperature, isotonic), the expected calibration error and recommended thresholds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.isotonic import IsotonicRegression

from alertvision.deploy.calibration import (
    Calibration,
    expected_calibration_error,
    fit_calibration,
    plot_reliability,
    reliability_table,
    sigmoid,
)
from alertvision.deploy.thresholds import recommend_thresholds


def _overconfident(n: int = 20000, temperature: float = 2.5, seed: int = 0):
    """Labels drawn from sigmoid(z), logits reported as z * temperature (too confident)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)
    labels = (rng.random(n) < sigmoid(z)).astype(float)
    return z * temperature, labels


def test_temperature_scaling_recovers_the_temperature_and_lowers_the_ece():
    logits, labels = _overconfident()
    cal = fit_calibration(logits, labels, "temperature")
    assert cal.temperature == pytest.approx(2.5, rel=0.05)
    before = expected_calibration_error(sigmoid(logits), labels)
    after = expected_calibration_error(cal.apply(logits), labels)
    assert before > 0.05 and after < 0.015


def test_isotonic_applies_as_scikit_learn_predicts_and_round_trips_through_its_spec():
    logits, labels = _overconfident(n=3000, seed=1)
    cal = fit_calibration(logits, labels, "isotonic")
    iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(sigmoid(logits), labels)
    probe = np.linspace(-20, 20, 501)
    np.testing.assert_allclose(cal.apply(probe), iso.predict(sigmoid(probe)), atol=1e-12)
    again = Calibration.from_spec(json.dumps(cal.spec()))
    np.testing.assert_array_equal(again.apply(probe), cal.apply(probe))
    assert np.all(np.diff(cal.apply(probe)) >= 0)  # monotone: the ranking (ROC AUC) is kept


def test_none_is_the_sigmoid_and_unknown_methods_are_named():
    z = np.array([-3.0, 0.0, 3.0])
    np.testing.assert_array_equal(fit_calibration(z, np.array([0, 1, 1]), "none").apply(z), sigmoid(z))
    with pytest.raises(ValueError, match="export.calibration"):
        fit_calibration(z, np.array([0, 1, 1]), "platt")
    with pytest.raises(ValueError, match="both classes"):
        fit_calibration(z, np.ones(3), "temperature")


def test_ece_is_the_weighted_gap_per_bin():
    # two bins used: 0.05 (4 alerts, 1 positive: gap 0.2) and 0.95 (6 alerts, 6 positive: gap 0.05)
    p = np.array([0.05] * 4 + [0.95] * 6)
    y = np.array([1, 0, 0, 0] + [1] * 6, dtype=float)
    assert expected_calibration_error(p, y, bins=10) == pytest.approx((4 * 0.2 + 6 * 0.05) / 10)
    table = reliability_table(p, y, bins=10)
    assert table["n"].sum() == 10 and table.loc[9, "n"] == 6
    assert reliability_table(np.array([1.0]), np.array([1.0]), bins=10).loc[9, "n"] == 1  # 1.0 in the last bin


def test_the_reliability_diagram_is_a_png(tmp_path):
    logits, labels = _overconfident(n=500)
    plot_reliability({"raw": (sigmoid(logits), labels)}, tmp_path / "r.png", "SYNTHETIC DATA")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _val_predictions() -> pd.DataFrame:
    """Six two-alert sources at magpsf 18: three positives scored 0.9/0.8/0.6, three negatives 0.7/0.3/0.1."""
    rows = []
    for i, (label, score) in enumerate([(1, 0.9), (1, 0.8), (1, 0.6), (0, 0.7), (0, 0.3), (0, 0.1)]):
        for jd in (1.0, 2.0):
            rows.append({"objectId": f"ZTF{i}", "jd": jd, "label": label, "magpsf": 18.0, "score": score})
    return pd.DataFrame(rows)


def test_thresholds_maximise_f1_and_reach_the_targets_on_the_given_alerts():
    rec = recommend_thresholds(_val_predictions(), target_purity=1.0, target_completeness=1.0)
    p1 = rec["bts_p1"]
    assert p1["policy_threshold"] == 0.5
    # score > t: t in [0.30, 0.59] triggers 3 trues and 1 false (F1 6/7, the best), t in [0.70, 0.79] 2 trues and
    # no false (F1 0.8); t < 0.30 triggers a second false
    assert p1["max_f1"]["threshold"] == 0.3 and p1["max_f1"]["f1"] == pytest.approx(6 / 7)
    assert p1["purity"]["threshold"] == 0.7 and p1["purity"]["purity"] == 1.0  # lowest with no false trigger
    assert p1["completeness"]["threshold"] == 0.59  # highest that still triggers the 0.6 positive
    unreachable = recommend_thresholds(_val_predictions().assign(score=0.0), 0.9, 0.9)["prod_p1"]
    assert unreachable["purity"]["threshold"] is None and unreachable["completeness"]["threshold"] is None
