"""The metadata input of multi-modal runs: the survey's features of every alert (ZTF's 25 by default),
checked for NaN and inf."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from alertvision.data.features import METADATA_FEATURES

FILL_POLICIES = ("error", "zero", "median")


class MetadataError(ValueError):
    """A non-finite metadata feature where the configuration asks for none."""


def metadata_matrix(
    alerts: pd.DataFrame,
    rows: np.ndarray,
    train_rows: np.ndarray,
    fill: str = "error",
    features: Sequence[str] = METADATA_FEATURES,
) -> tuple[np.ndarray, list[float] | None]:
    """The ``features`` (the dataset's, :attr:`~alertvision.data.contract.Dataset.metadata_features`; ZTF's 25
    by default) of every alert as float32 (N, F) in that order, and the per-feature fill values.

    Only ``rows`` (the alerts the run reads) are checked. ``fill="error"`` raises
    :class:`MetadataError` naming the first non-finite column and alert; ``zero`` fills with 0,
    ``median`` with the median over ``train_rows`` (0 where a feature has no finite train value).
    Filling happens in the model (the returned values), so non-finite entries stay in the matrix.
    """
    if fill not in FILL_POLICIES:
        raise ValueError(f"config key multimodal.metadata_fill: {fill!r} is not one of {', '.join(FILL_POLICIES)}")
    features = tuple(features)
    missing = [c for c in features if c not in alerts.columns]
    if missing:
        raise MetadataError(f"alerts table lacks metadata feature(s) {', '.join(missing)}")
    matrix = alerts[list(features)].to_numpy(dtype=np.float32)
    rows = np.asarray(rows)
    bad = ~np.isfinite(matrix[rows])
    if fill == "error":
        if bad.any():
            i, j = np.argwhere(bad)[0]
            alert = alerts.iloc[rows[i]]
            per_column = {features[c]: int(n) for c, n in enumerate(bad.sum(axis=0)) if n}
            raise MetadataError(
                f"metadata feature {features[j]!r} is {matrix[rows[i], j]} for alert {alert['alert_id']} "
                f"of {alert['objectId']} (jd {alert['jd']:.5f}); non-finite values per column: {per_column}. "
                f"Set multimodal.metadata_fill to 'median' or 'zero' to fill them, or fix the dataset"
            )
        return matrix, None
    if fill == "zero":
        return matrix, [0.0] * len(features)
    train = matrix[np.asarray(train_rows)]
    medians = []
    for j in range(train.shape[1]):
        finite = train[np.isfinite(train[:, j]), j]
        medians.append(float(np.median(finite)) if len(finite) else 0.0)
    return matrix, medians
