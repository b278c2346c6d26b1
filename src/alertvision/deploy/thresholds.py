"""Recommended score thresholds for the trigger policies, chosen on the validation split only.

For each policy (:data:`alertvision.evaluation.policies.POLICIES`), the policy is re-run over the
validation sources with its score threshold replaced by each value of :data:`GRID` (on the
calibrated score), and three thresholds are recommended:

``max_f1``
    the threshold with the highest F1 (the lowest one where several tie);
``purity``
    the lowest threshold whose purity reaches ``target_purity`` (the most complete such trigger);
``completeness``
    the highest threshold whose completeness reaches ``target_completeness`` (the purest such trigger).

A target no threshold reaches is recorded as ``null``. The test split is never read here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from alertvision.evaluation.policies import POLICIES, policy_metrics

#: The thresholds tried: 0.01, 0.02, ..., 0.99.
GRID: tuple[float, ...] = tuple(np.round(np.arange(1, 100) / 100, 2).tolist())


def _point(threshold: float, m: Mapping[str, Any]) -> dict[str, float]:
    return {"threshold": threshold, **{k: float(m[k]) for k in ("f1", "completeness", "purity")}}


def recommend_thresholds(
    val_predictions: pd.DataFrame,
    target_purity: float,
    target_completeness: float,
    policies: Mapping[str, Any] = POLICIES,
    grid: tuple[float, ...] = GRID,
) -> dict[str, dict[str, Any]]:
    """Per policy name: its own threshold and the three recommendations (see the module docstring).

    ``val_predictions`` has objectId, jd, label, magpsf and ``score`` (the calibrated score) of the
    validation alerts.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, policy in policies.items():
        curve = [(t, policy_metrics(val_predictions, dataclasses.replace(policy, score_threshold=t))) for t in grid]
        f1 = np.array([m["f1"] for _, m in curve], dtype=float)
        best = int(np.nanargmax(f1)) if np.isfinite(f1).any() else None
        pure = [(t, m) for t, m in curve if _reaches(m["purity"], target_purity)]
        complete = [(t, m) for t, m in curve if _reaches(m["completeness"], target_completeness)]
        out[name] = {
            "policy_threshold": policy.score_threshold,
            "max_f1": _point(*curve[best]) if best is not None else None,
            "purity": {"target": target_purity, **(_point(*pure[0]) if pure else {"threshold": None})},
            "completeness": {
                "target": target_completeness,
                **(_point(*complete[-1]) if complete else {"threshold": None}),
            },
        }
    return out


def _reaches(value: float, target: float) -> bool:
    return not math.isnan(value) and value >= target
