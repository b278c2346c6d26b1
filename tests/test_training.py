"""The training loop: it learns, it is deterministic, it writes the run folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from alertvision.config import training_params
from alertvision.contract import open_dataset
from alertvision.training.data import Batches, augment
from alertvision.training.loop import RUN_FILES, train_run
from alertvision.training.schedule import warmup_cosine



def _train(tiny_datasets, split_file, out, arch="cnn", **overrides):
    config = tiny_datasets["config"]
    training = {**training_params(config, arch), **overrides}
    return train_run(tiny_datasets["ztf"], split_file, out, arch_cfg=config["archs"][arch], training=training,
                     seed=0, run_info={"arch": arch}, progress=False)


def test_short_training_lowers_the_loss_and_writes_the_run(tiny_datasets, split_file, tmp_path):
    metrics = _train(tiny_datasets, split_file, tmp_path, epochs=4, patience=4)
    history = pd.read_csv(tmp_path / "history.csv")
    assert len(history) == 4
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert history["val_loss"].min() < history["val_loss"].iloc[0]
    for name in RUN_FILES:
        assert (tmp_path / name).is_file()
    predictions = pd.read_parquet(tmp_path / "predictions.parquet")
    assert len(predictions) == metrics["n_test_alerts"] and predictions["score"].between(0, 1).all()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= saved["test_roc_auc"] <= 1.0 and saved["synthetic"] is True
    assert saved["n_train_alerts"] == int((pd.read_parquet(split_file)["split"] == "train").sum())
    assert saved["best_epoch"] == int(history["val_loss"].idxmin()) + 1


def test_cpu_training_is_deterministic(tiny_datasets, split_file, tmp_path):
    a = _train(tiny_datasets, split_file, tmp_path / "a", epochs=1)
    b = _train(tiny_datasets, split_file, tmp_path / "b", epochs=1)
    assert a["test_roc_auc"] == b["test_roc_auc"] and a["test_loss"] == b["test_loss"]
    pa = pd.read_parquet(tmp_path / "a" / "predictions.parquet")
    pb = pd.read_parquet(tmp_path / "b" / "predictions.parquet")
    assert np.array_equal(pa["score"], pb["score"])


def test_batches_read_the_requested_rows(tiny_datasets):
    data = open_dataset(tiny_datasets["ztf"])
    rows = np.array([7, 3, 11, 0, 5])
    labels = data.alerts["label"].to_numpy()[rows]
    batches = Batches(data.images, rows, labels, batch_size=2, shuffle=True, seed=1)
    seen = {}
    for x, y, pos in batches:
        for xi, yi, p in zip(x, y, pos):
            seen[int(p)] = (xi.numpy(), float(yi))
    assert sorted(seen) == list(range(5))
    for p, (xi, yi) in seen.items():
        assert np.array_equal(xi, data.images[rows[p]]) and yi == labels[p]


def test_augment_only_flips_and_rotates():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5).repeat(8, 1, 1, 1)
    out = augment(x, torch.Generator().manual_seed(0))
    for a, b in zip(x, out):
        dihedral = [torch.rot90(f, k, dims=(-2, -1)) for f in (a, a.flip(-1)) for k in range(4)]
        assert any(torch.equal(b, d) for d in dihedral)
    assert not torch.equal(out, x)


def test_warmup_then_cosine():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
