"""Aggregation over seeds and Figure 2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from alertvision.aggregate import aggregate_roc_auc, write_roc_auc_table
from alertvision.figures import figure2


def _write_runs(tmp_path, synthetic=True):
    files = []
    rng = np.random.default_rng(0)
    for dataset in ("ztf", "ls"):
        for arch, regimens in (("cnn", ["none"]), ("convnext", ["none", "imagenet"]), ("maxvit", ["none"])):
            for regimen in regimens:
                for fraction, n in (("10", 100), ("100", 1000)):
                    for seed, auc in enumerate((0.80, 0.90, 0.85)):
                        m = dict(dataset=dataset, modality="image", arch=arch, regimen=regimen, fraction=fraction,
                                 seed=seed, test_roc_auc=auc + 0.01 * rng.random(), test_loss=0.5,
                                 n_train_alerts=n + seed, synthetic=synthetic)
                        path = tmp_path / f"{dataset}_{arch}_{regimen}_{fraction}_{seed}.json"
                        path.write_text(json.dumps(m))
                        files.append(path)
    return files


def test_median_and_std_over_seeds(tmp_path):
    table = write_roc_auc_table(_write_runs(tmp_path), tmp_path / "roc_auc.csv")
    assert len(table) == 2 * 4 * 2  # datasets x (arch, regimen) pairs x fractions
    row = table[(table.dataset == "ztf") & (table.arch == "cnn") & (table.fraction == 100.0)].iloc[0]
    aucs = [json.loads(p.read_text())["test_roc_auc"] for p in sorted(tmp_path.glob("ztf_cnn_none_100_*.json"))]
    assert row.n_seeds == 3 and row.n_train_alerts == 1001
    assert row.roc_auc_median == pytest.approx(np.median(aucs))
    assert row.roc_auc_std == pytest.approx(np.std(aucs, ddof=1))
    assert pd.read_csv(tmp_path / "roc_auc.csv").shape == table.shape


def test_one_seed_has_no_std(tmp_path):
    metrics = pd.DataFrame([dict(dataset="ztf", modality="image", arch="cnn", regimen="none", fraction=5.0, seed=0,
                                 test_roc_auc=0.7, test_loss=0.6, n_train_alerts=10, synthetic=True)])
    table = aggregate_roc_auc(metrics)
    assert np.isnan(table.loc[0, "roc_auc_std"])


@pytest.mark.parametrize("synthetic", [True, False])
def test_figure2_draws_every_panel_and_labels_synthetic(tmp_path, synthetic):
    table = write_roc_auc_table(_write_runs(tmp_path, synthetic), tmp_path / "roc_auc.csv")
    info = figure2(table, tmp_path / "figure2.pdf")
    assert (tmp_path / "figure2.pdf").read_bytes()[:5] == b"%PDF-"
    assert info["panels"] == [("ztf", "convnext"), ("ztf", "maxvit"), ("ls", "convnext"), ("ls", "maxvit")]
    assert ("SYNTHETIC DATA" in info["title"]) is synthetic
    assert info["lines"][("ztf", "convnext")] == ["CNN baseline", "ConvNeXt, none", "ConvNeXt, imagenet"]
