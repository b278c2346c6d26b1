"""Paced epochs (`checkpoints.min_epoch_seconds`) and the train script's early stop-signal handlers: what makes
the SLURM time-limit test hold on a fast or idle machine as on a slow or loaded one."""

from __future__ import annotations

import ast
import json
import os
import signal
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch

from alertvision.config import model_spec, training_params
from alertvision.training.checkpoint import CHECKPOINT_NAME
from alertvision.training.loop import train_run
from alertvision.training.signals import PREEMPTED_EXIT, stop_signals

REPO = Path(__file__).resolve().parents[2]
#: two paced epochs of at least a second each
EPOCHS, EPOCH_S = 2, 1.0


def _run(tiny_datasets, split_file, out: Path, **extra) -> dict:
    config = tiny_datasets["config"]
    return train_run(
        tiny_datasets["ztf"],
        split_file,
        out,
        arch_cfg=model_spec(config, "cnn", "image"),
        training={**training_params(config, "cnn", "image"), "epochs": EPOCHS, "patience": EPOCHS, "threads": 1},
        seed=0,
        run_info={"arch": "cnn", "modality": "image"},
        progress=False,
        **extra,
    )


def _outputs(folder: Path) -> tuple:
    history = pd.read_csv(folder / "history.csv")
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.pop("seconds")
    predictions = pd.read_parquet(folder / "predictions.parquet")
    state = torch.load(folder / "model.pt", weights_only=True)["state_dict"]
    return history, metrics, predictions, state


def test_a_paced_run_outlasts_its_floor_is_stopped_by_a_signal_and_resumes_to_the_unpaced_outputs(
    tiny_datasets, split_file, tmp_path
):
    """A signal sent half a second after a paced run starts always finds it training (its epochs cannot end
    sooner than EPOCHS * EPOCH_S on any machine): it saves and exits 75, the rerun resumes, and the outputs are
    those of an unpaced, unsignalled run; only the durations differ."""
    _run(tiny_datasets, split_file, tmp_path / "unpaced")
    paced = tmp_path / "paced"
    warning = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGUSR1))
    with stop_signals() as signalled, pytest.raises(SystemExit) as stopped:
        warning.start()
        _run(tiny_datasets, split_file, paced, min_epoch_s=EPOCH_S)
    warning.join()
    assert (stopped.value.code, signalled) == (PREEMPTED_EXIT, [signal.SIGUSR1])
    assert torch.load(paced / CHECKPOINT_NAME, weights_only=False)["signal"] == "SIGUSR1"
    assert not (paced / "metrics.json").exists()

    _run(tiny_datasets, split_file, paced, min_epoch_s=EPOCH_S)
    (ha, ma, pa, sa), (hb, mb, pb, sb) = _outputs(tmp_path / "unpaced"), _outputs(paced)
    pd.testing.assert_frame_equal(ha.drop(columns="seconds"), hb.drop(columns="seconds"), check_exact=True)
    assert ma == mb
    pd.testing.assert_frame_equal(pa, pb, check_exact=True)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # a floor: waits only lengthen an epoch, whatever the machine (the resumed one is paced from where it resumed)
    assert (hb["seconds"].iloc[1:] >= EPOCH_S).all(), hb


def test_the_train_script_records_stop_signals_before_any_other_import():
    """workflow/scripts/train.py: the stop-signal block is its first statement after one light import, and
    everything else (the heavy imports, the run) is inside it, so a warning during start-up is recorded."""
    tree = ast.parse((REPO / "workflow" / "scripts" / "train.py").read_text())
    body = [node for node in tree.body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    first, block = body[0], body[1]
    assert isinstance(first, ast.ImportFrom) and first.module == "alertvision.training.signals", ast.dump(first)
    assert len(body) == 2 and isinstance(block, ast.With), [type(node).__name__ for node in body]
    call = block.items[0].context_expr
    assert isinstance(call, ast.Call) and getattr(call.func, "id", None) == "stop_signals"
    assert "checkpoints" in ast.unparse(call)  # enabled as the config's checkpoints are
    assert any(isinstance(node, ast.ImportFrom) and node.module == "alertvision.study.steps" for node in block.body)
