"""Paced epochs (`checkpoints.min_epoch_seconds`) and the train script's stop-signal handlers, from its first
line until it exits: what makes the SLURM time-limit test hold on a fast or idle machine as on a loaded one."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from alertvision.study.jobs import TrainJob, model_spec, training_params
from alertvision.training import engine
from alertvision.training.checkpoint import CHECKPOINT_NAME
from alertvision.training.loop import train_run
from alertvision.training.signals import PREEMPTED_EXIT, stop_signals

REPO = Path(__file__).resolve().parents[2]
EPOCHS, EPOCH_S = 3, 7.0


class VirtualClock:
    """The training engine's clock, where time passes only when the engine waits: pacing is checked without
    waiting and without timing anything. ``signal_at`` sends SIGUSR1 to this process during that wait."""

    def __init__(self, signal_at: int | None = None):
        self.now, self.waits, self.signal_at = 1000.0, [], signal_at

    def monotonic(self) -> float:
        return self.now

    time = monotonic

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        if len(self.waits) == self.signal_at:
            os.kill(os.getpid(), signal.SIGUSR1)


def _run(tiny_datasets, split_file, out: Path, **extra) -> dict:
    config = tiny_datasets["config"]
    return train_run(
        TrainJob.local(
            tiny_datasets["ztf"],
            split_file,
            out,
            model=model_spec(config, "cnn", "image"),
            training={**training_params(config, "cnn", "image"), "epochs": EPOCHS, "patience": EPOCHS, "threads": 1},
            seed=0,
            info={"arch": "cnn", "modality": "image"},
        ),
        progress=False,
        **extra,
    )


def _assert_same_outputs(a: Path, b: Path) -> pd.DataFrame:
    """Runs ``a`` and ``b`` wrote the same history, metrics, predictions and weights, timings aside; b's history."""
    (ha, ma, pa, sa), (hb, mb, pb, sb) = _outputs(a), _outputs(b)
    pd.testing.assert_frame_equal(ha.drop(columns="seconds"), hb.drop(columns="seconds"), check_exact=True)
    assert ma == mb
    pd.testing.assert_frame_equal(pa, pb, check_exact=True)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    return hb


def _outputs(folder: Path) -> tuple:
    history = pd.read_csv(folder / "history.csv")
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.pop("seconds")
    predictions = pd.read_parquet(folder / "predictions.parquet")
    state = torch.load(folder / "model.pt", weights_only=True)["state_dict"]
    return history, metrics, predictions, state


@pytest.fixture
def unpaced(tiny_datasets, split_file, tmp_path) -> Path:
    _run(tiny_datasets, split_file, tmp_path / "unpaced")
    return tmp_path / "unpaced"


def test_paced_epochs_last_their_floor_whatever_the_machine_and_change_no_result(
    tiny_datasets, split_file, tmp_path, monkeypatch, unpaced
):
    """Each step waits for its share of min_epoch_s (training takes no time on the virtual clock, as on an
    infinitely fast machine): every epoch lasts the floor, and the outputs are those of an unpaced run."""
    clock = VirtualClock()
    monkeypatch.setattr(engine, "time", clock)
    _run(tiny_datasets, split_file, tmp_path / "paced", min_epoch_s=EPOCH_S)
    steps = len(clock.waits) // EPOCHS
    assert len(clock.waits) == EPOCHS * steps and clock.waits == pytest.approx([EPOCH_S / steps] * len(clock.waits))
    history = _assert_same_outputs(unpaced, tmp_path / "paced")
    assert list(history["seconds"]) == pytest.approx([EPOCH_S] * EPOCHS)


def test_a_signal_during_a_paced_epoch_stops_it_at_once_and_the_resumed_run_is_paced_for_what_is_left(
    tiny_datasets, split_file, tmp_path, monkeypatch, unpaced
):
    """SLURM's warning during a wait of the second epoch: no further wait, the run saves after that step and
    exits 75; the rerun paces the rest of that epoch for the steps left only, and ends as an unpaced run."""
    paced = tmp_path / "paced"
    monkeypatch.setattr(engine, "time", VirtualClock())
    _run(tiny_datasets, split_file, tmp_path / "count", min_epoch_s=EPOCH_S)
    steps = len(engine.time.waits) // EPOCHS
    clock = VirtualClock(signal_at=steps + 3)  # during the wait after the 3rd step of epoch 2
    monkeypatch.setattr(engine, "time", clock)
    with stop_signals() as signalled, pytest.raises(SystemExit) as stopped:
        _run(tiny_datasets, split_file, paced, min_epoch_s=EPOCH_S)
    assert (stopped.value.code, signalled, len(clock.waits)) == (PREEMPTED_EXIT, [signal.SIGUSR1], steps + 3)
    state = torch.load(paced / CHECKPOINT_NAME, weights_only=False)
    assert (state["epoch"], state["within"]["step"], state["signal"]) == (1, 3, "SIGUSR1")

    monkeypatch.setattr(engine, "time", VirtualClock())
    _run(tiny_datasets, split_file, paced, min_epoch_s=EPOCH_S)
    history = _assert_same_outputs(unpaced, paced)
    assert list(history["seconds"]) == pytest.approx([EPOCH_S, EPOCH_S * (steps - 3) / steps, EPOCH_S])


#: a job's script: the handlers first, a warning during start-up, heavy imports, a warning at exit
SCRIPT = """
import atexit, os, signal, sys
from alertvision.training.signals import record_stop_signals_until_exit
received = record_stop_signals_until_exit(sys.argv[1] == "on")
os.kill(os.getpid(), signal.SIGUSR1)
import torch
atexit.register(os.kill, os.getpid(), signal.SIGUSR1)  # while the interpreter shuts down
print(received, flush=True)
"""


@pytest.mark.parametrize("checkpoints", ["on", "off"])
def test_stop_signals_recorded_until_exit_neither_kill_a_starting_nor_a_finished_job(checkpoints):
    """Recorded from the script's first line until the process exits: a warning during the imports and one
    as the interpreter shuts down (after the outputs are written) are noted; with checkpoints off the
    warning kills the process as before (nothing would save the run)."""
    child = subprocess.run([sys.executable, "-c", SCRIPT, checkpoints], capture_output=True, text=True, timeout=300)
    if checkpoints == "on":
        assert (child.returncode, child.stdout) == (0, f"[{signal.SIGUSR1.value}]\n"), child.stderr[-2000:]
    else:
        assert child.returncode == -signal.SIGUSR1, child.stderr[-2000:]


def test_the_train_script_records_stop_signals_before_any_other_import():
    """workflow/scripts/train.py installs the handlers (as the config's checkpoints say) before any other
    import: its first import and first call."""
    tree = ast.parse((REPO / "workflow" / "scripts" / "train.py").read_text())
    body = [node for node in tree.body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    first, call = body[0], body[1]
    assert isinstance(first, ast.ImportFrom) and first.module == "alertvision.training.signals", ast.dump(first)
    assert isinstance(call, ast.Expr) and isinstance(call.value, ast.Call), ast.dump(call)
    assert getattr(call.value.func, "id", None) == "record_stop_signals_until_exit"
    assert "checkpoints" in ast.unparse(call)  # on as the config's checkpoints are


EXIT_HOOKS = """
import atexit, os, signal, sys
os.environ["SLURM_JOB_ID"] = "1"
from alertvision.slurm import outlive_time_limit_warning
from alertvision.training.signals import record_stop_signals_until_exit
assert outlive_time_limit_warning()
record_stop_signals_until_exit()
atexit._run_exitfuncs()
print([signal.getsignal(s) == signal.SIG_IGN for s in (signal.SIGTERM, signal.SIGUSR1)], flush=True)
"""


def test_stop_signals_are_ignored_from_the_exit_hooks_on():
    """Python puts the default action back for its handlers as it shuts down, after the exit hooks: a job's
    Snakemake and its training script ignore the stop signals from their exit hooks on, so a warning as a
    finished job exits cannot kill it."""
    child = subprocess.run([sys.executable, "-c", EXIT_HOOKS], capture_output=True, text=True, timeout=300)
    assert (child.returncode, child.stdout) == (0, "[True, True]\n"), child.stderr[-2000:]
