"""Calibrated scores: a map from a model's logit to a probability, fitted on the validation split.

Two methods (``export.calibration``): ``temperature`` (one scale, ``sigmoid(logit / T)``, T chosen
by minimising the validation log-loss with SciPy) and ``isotonic`` (scikit-learn's monotone fit of
the label on ``sigmoid(logit)``, kept as its breakpoints and applied by linear interpolation, as
scikit-learn applies it); ``none`` keeps ``sigmoid(logit)``. A :class:`Calibration` travels as a
JSON spec (the ONNX metadata, ``alertvision predict``).

Calibrated probabilities reflect the class balance of the validation split (the study's sample of
bright transients and the rest), not the balance of a night's alert stream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from alertvision.atomic import atomic_path
from alertvision.models.runtime import sigmoid

METHODS = ("temperature", "isotonic", "none")
#: Equal-width probability bins of the expected calibration error and the reliability diagram.
ECE_BINS = 15


@dataclass(frozen=True)
class Calibration:
    """A fitted logit -> probability map (see the module docstring)."""

    method: str
    temperature: float = 1.0
    x: tuple[float, ...] = field(default=())
    y: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"calibration {self.method!r} is not one of {', '.join(METHODS)}")

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (float64) of ``logits``."""
        logits = np.asarray(logits, dtype=np.float64)
        if self.method == "temperature":
            return sigmoid(logits / self.temperature)
        if self.method == "isotonic":
            return np.interp(sigmoid(logits), self.x, self.y)
        return sigmoid(logits)

    def spec(self) -> dict[str, Any]:
        """The JSON-ready description: method and parameters, and the formula in words."""
        if self.method == "temperature":
            return {"method": "temperature", "temperature": self.temperature, "formula": "sigmoid(logit / temperature)"}
        if self.method == "isotonic":
            return {
                "method": "isotonic",
                "x": list(self.x),
                "y": list(self.y),
                "formula": "interp(sigmoid(logit), x, y), clipped at the ends (numpy.interp)",
            }
        return {"method": "none", "formula": "sigmoid(logit)"}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | str) -> "Calibration":
        """The calibration a :meth:`spec` (or its JSON) describes."""
        spec = json.loads(spec) if isinstance(spec, str) else spec
        method = spec.get("method", "none")
        if method == "temperature":
            return cls("temperature", temperature=float(spec["temperature"]))
        if method == "isotonic":
            return cls("isotonic", x=tuple(map(float, spec["x"])), y=tuple(map(float, spec["y"])))
        return cls(method)


def _log_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy of ``sigmoid(logits)`` against 0/1 labels (stable form)."""
    return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))


def fit_calibration(logits: np.ndarray, labels: np.ndarray, method: str = "temperature") -> Calibration:
    """Fit ``method`` on validation logits and their 0/1 labels."""
    from scipy.optimize import minimize_scalar  # deferred: scipy is heavy

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if method not in METHODS:
        raise ValueError(f"calibration {method!r} is not one of {', '.join(METHODS)} (config key export.calibration)")
    if method == "none":
        return Calibration("none")
    if len(logits) == 0 or len(np.unique(labels)) < 2:
        raise ValueError(
            f"cannot fit a {method} calibration on {len(logits)} validation alerts of "
            f"{len(np.unique(labels))} class(es); it needs both classes"
        )
    if method == "temperature":
        # over log T, so T stays positive; bounds T in [e^-5, e^5]
        best = minimize_scalar(lambda s: _log_loss(logits / np.exp(s), labels), bounds=(-5.0, 5.0), method="bounded")
        return Calibration("temperature", temperature=float(np.exp(best.x)))
    from sklearn.isotonic import IsotonicRegression  # deferred: sklearn is heavy

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(sigmoid(logits), labels)
    return Calibration("isotonic", x=tuple(map(float, iso.X_thresholds_)), y=tuple(map(float, iso.y_thresholds_)))


def reliability_table(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> pd.DataFrame:
    """Per equal-width probability bin ([lo, hi), the last closed): alerts, mean probability, fraction positive."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    n = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(which, weights=p, minlength=bins) / n
        frac = np.bincount(which, weights=y, minlength=bins) / n
    return pd.DataFrame(
        {"lo": edges[:-1], "hi": edges[1:], "n": n, "mean_probability": mean_p, "fraction_positive": frac}
    )


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the alert-weighted mean over bins of |fraction positive - mean probability| (NaN when empty)."""
    table = reliability_table(probabilities, labels, bins)
    used = table[table["n"] > 0]
    if used.empty:
        return float("nan")
    gap = (used["fraction_positive"] - used["mean_probability"]).abs()
    return float((gap * used["n"]).sum() / used["n"].sum())


def plot_reliability(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], out_png: Any, title: str, bins: int = ECE_BINS
) -> None:
    """A reliability diagram: for each named (probabilities, labels) pair, fraction positive against mean
    probability per bin, with its ECE in the legend; the diagonal is perfect calibration."""
    import matplotlib  # deferred: matplotlib is heavy

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: matplotlib is heavy

    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfectly calibrated")
    for name, (p, y) in curves.items():
        table = reliability_table(p, y, bins)
        used = table[table["n"] > 0]
        ece = expected_calibration_error(p, y, bins)
        ax.plot(used["mean_probability"], used["fraction_positive"], marker="o", ms=3, label=f"{name} (ECE {ece:.3f})")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("fraction of positive alerts")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
