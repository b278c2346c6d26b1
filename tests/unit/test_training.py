"""The training loop: it learns, it is deterministic, it writes the run folder."""

from __future__ import annotations

import ast
import inspect
import json

import numpy as np
import pandas as pd
import pytest
import torch

from alertvision.data.contract import open_dataset
from alertvision.study.jobs import TrainJob, training_params
from alertvision.training import engine
from alertvision.training.data import Batches, augment
from alertvision.training.engine import EarlyStopping, FitState
from alertvision.training.loop import RUN_FILES, train_run
from alertvision.training.schedule import epoch_warmup_cosine, warmup_cosine


def _train(tiny_datasets, split_file, out, arch="cnn", **overrides):
    config = tiny_datasets["config"]
    training = {**training_params(config, arch), **overrides}
    return train_run(
        TrainJob.local(
            tiny_datasets["ztf"],
            split_file,
            out,
            model=config["archs"][arch],
            training=training,
            seed=0,
            info={"arch": arch},
        ),
        progress=False,
    )


def test_short_training_lowers_the_loss_and_writes_the_run(tiny_datasets, split_file, tmp_path):
    metrics = _train(tiny_datasets, split_file, tmp_path, epochs=4, patience=4, min_improvement=0.0)
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


# --- BTSbot's recipe ---------------------------------------------------------------------------------


def _btsbot_rates(lr: float, warmup: int, epochs: int) -> list[float]:
    """The rate of each epoch under btsbot/train.py's schedulers, stepped once per epoch."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = torch.optim.lr_scheduler.SequentialLR(
        opt,
        [
            torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=warmup),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs - warmup), eta_min=lr * 0.01),
        ],
        milestones=[warmup],
    )
    rates = []
    for _ in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


@pytest.mark.parametrize("warmup, epochs", [(2, 10), (0, 7), (6, 1000)])
def test_epoch_schedule_is_btsbots(warmup, epochs):
    lr = 5e-6
    ours = [lr * epoch_warmup_cosine(e, warmup, epochs) for e in range(epochs)]
    np.testing.assert_allclose(ours, _btsbot_rates(lr, warmup, epochs), rtol=1e-9, atol=0)
    assert ours[0] == pytest.approx(lr * (0.01 if warmup else 1.0))
    assert epoch_warmup_cosine(epochs, warmup, epochs) == pytest.approx(0.01)  # the floor at the horizon
    assert epoch_warmup_cosine(epochs + 50, warmup, epochs) == pytest.approx(0.01)  # and after it
    if epochs == 1000:  # a 1000-epoch horizon keeps the rate near lr for the first 100 epochs
        assert min(ours[warmup:100]) > 0.97 * lr


def test_training_runs_the_epoch_schedule_and_records_each_epoch_s_rate(tiny_datasets, split_file, tmp_path):
    _train(
        tiny_datasets,
        split_file,
        tmp_path,
        epochs=5,
        patience=5,
        warmup_epochs=2,
        lr=1e-3,
        schedule="epoch",
        min_improvement=0.0,
    )
    rates = pd.read_csv(tmp_path / "history.csv")["lr"].to_numpy()
    np.testing.assert_allclose(rates, _btsbot_rates(1e-3, 2, 5), rtol=1e-9)
    assert rates[0] == pytest.approx(1e-5)


def test_early_stopping_needs_the_relative_improvement(tiny_datasets, split_file, tmp_path):
    common = dict(epochs=6, patience=2, lr=3e-4, schedule="epoch", warmup_epochs=0)
    runs = {}
    for name, needed in (("any", 0.0), ("half_percent", 0.005), ("huge", 10.0)):
        metrics = _train(tiny_datasets, split_file, tmp_path / name, min_improvement=needed, **common)
        runs[name] = (metrics, pd.read_csv(tmp_path / name / "history.csv")["val_loss"].to_numpy())
    for name, needed in (("any", 0.0), ("half_percent", 0.005)):
        metrics, val = runs[name]
        # the kept epoch is the last one that beat every earlier loss by the margin, as btsbot/train.py keeps it
        kept = [e for e in range(len(val)) if val[e] * (1 + needed) < min([np.inf, *val[:e]])][-1] + 1
        assert metrics["best_epoch"] == kept
    metrics, val = runs["huge"]  # nothing beats the first epoch by 1000%: it is kept, and training stops early
    assert metrics["best_epoch"] == 1 and len(val) == 1 + common["patience"]


def test_warm_up_epochs_are_never_the_best(tiny_datasets, split_file, tmp_path):
    """start_from_epoch: the first epochs are neither kept nor counted toward patience (Keras' meaning)."""
    common = dict(epochs=6, patience=2, lr=3e-4, schedule="epoch", warmup_epochs=2, min_improvement=10.0)
    metrics = _train(tiny_datasets, split_file, tmp_path / "a", start_from_epoch=2, **common)
    # epochs 1-2 unmonitored; epoch 3 is the first candidate and, nothing beating it by 1000%, the best;
    # patience counts from it: epochs 4 and 5 without improvement end the run
    assert metrics["best_epoch"] == 3 and metrics["epochs_run"] == 5
    # a start beyond the run (epochs cut to 2 for a quick try, say) keeps the last epoch, as Keras does
    metrics = _train(tiny_datasets, split_file, tmp_path / "b", start_from_epoch=5, **{**common, "epochs": 2})
    assert metrics["best_epoch"] == 2 and metrics["epochs_run"] == 2


def test_early_stopping_decides_from_the_validation_losses_alone():
    """The callback fit consults after each epoch: the best epoch (a copy of its weights) and the stop, from
    the losses alone: BTSbot's relative margin, patience counted from the best epoch, Keras' warm-up."""
    model, state = torch.nn.Linear(1, 1), FitState()
    stopping = EarlyStopping(patience=2, min_improvement=0.005, start_from_epoch=1)
    for epoch, val_loss in enumerate([0.1, 1.0, 0.9, 0.899, 0.95, 0.5], start=1):
        if state.stopped:
            break
        with torch.no_grad():
            model.weight.fill_(epoch)
        stopping.update(state, epoch, val_loss, model)
    # 1: warm-up, unmonitored; 2, 3: improvements; 4: lower but not by 0.5%; 5: the second without, stop
    assert (state.best.epoch, state.best.val_loss, state.lowest, state.stopped) == (3, 0.9, 0.899, True)
    assert state.best.state["weight"].item() == 3.0 and model.weight.item() == 5.0
    assert EarlyStopping(start_from_epoch=5).within(2).start_from_epoch == 1  # the last epoch stays a candidate


def test_the_training_engine_reads_a_screen_at_a_time():
    """fit takes a few objects (settings, early stopping, a checkpointer, the epoch hook), not a parameter per
    option, and no function of the engine runs past 50 lines."""
    assert len(inspect.signature(engine.fit).parameters) <= 8
    tree = ast.parse(inspect.getsource(engine))
    long = [f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.end_lineno - f.lineno >= 50]
    assert long == []


def test_drop_last_skips_the_incomplete_batch_and_refuses_a_split_too_small(tiny_datasets, split_file, tmp_path):
    n_train = int((pd.read_parquet(split_file)["split"] == "train").sum())
    batches = Batches(np.zeros((n_train, 3, 2, 2), np.float32), np.arange(n_train), np.zeros(n_train), 64, min_batch=64)
    assert len(batches) == n_train // 64 and sum(len(y) for _, y, _ in batches) == (n_train // 64) * 64
    with pytest.raises(ValueError, match="no full batch"):
        _train(tiny_datasets, split_file, tmp_path, epochs=1, drop_last=True, batch_size=n_train + 1)


def test_a_diverging_run_stops_naming_the_non_finite_validation_loss(tiny_datasets, quick_split_file, tmp_path):
    """A rate far too high sends the weights to inf and the validation scores to NaN: the run stops with
    the message of docs/models.md (no finite validation loss, lower training.lr), not with the ROC AUC's error."""
    with pytest.raises(FloatingPointError, match="no epoch gave a finite validation loss.*lower training.lr"):
        _train(tiny_datasets, quick_split_file, tmp_path, epochs=2, patience=2, lr=1e30, warmup_epochs=0)
    assert not (tmp_path / "model.pt").exists()  # nothing written: the run has no epoch to keep
