"""Checkpoints: a run stopped after any epoch, or killed at a random moment, resumes to the same outputs
bit for bit (timings aside); a checkpoint of other parameters is ignored and replaced."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from alertvision.study.jobs import TrainJob, model_spec, training_params
from alertvision.training.checkpoint import CHECKPOINT_NAME
from alertvision.training.loop import train_run

#: a run long enough to be killed in the middle, short enough for a unit test
EPOCHS = {"epochs": 5, "patience": 5, "min_improvement": 0.0, "threads": 1}


class Crash(RuntimeError):
    """What the test raises to stop a run after an epoch, as a kill would."""


def _arguments(tiny_datasets, split_file, out, modality="image", **overrides) -> dict:
    config = tiny_datasets["config"]
    return {
        "dataset_dir": str(tiny_datasets["ztf"]),
        "split_file": str(split_file),
        "out_dir": str(out),
        "model": model_spec(config, "cnn", modality).as_dict(),
        "training": {**training_params(config, "cnn", modality), **EPOCHS, **overrides},
        "seed": 0,
        "info": {"arch": "cnn", "modality": modality},
    }


def _run(arguments: dict, **extra) -> dict:
    args = dict(arguments)
    job = TrainJob.local(args.pop("dataset_dir"), args.pop("split_file"), args.pop("out_dir"), **args)
    return train_run(job, progress=False, **extra)


def _outputs(folder: Path) -> tuple:
    """What must be equal between an interrupted and an uninterrupted run: everything but the timings."""
    history = pd.read_csv(folder / "history.csv").drop(columns="seconds")
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.pop("seconds")
    predictions = pd.read_parquet(folder / "predictions.parquet")
    state = torch.load(folder / "model.pt", weights_only=True)["state_dict"]
    return history, metrics, predictions, state


def _assert_same(a: Path, b: Path) -> None:
    ha, ma, pa, sa = _outputs(a)
    hb, mb, pb, sb = _outputs(b)
    pd.testing.assert_frame_equal(ha, hb, check_exact=True)
    assert ma == mb
    pd.testing.assert_frame_equal(pa, pb, check_exact=True)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("modality", ["image", "multimodal"])
def test_a_run_stopped_after_any_epoch_resumes_to_the_same_outputs(tiny_datasets, split_file, tmp_path, modality):
    arguments = _arguments(tiny_datasets, split_file, tmp_path / "whole", modality)
    _run(arguments)
    assert not (tmp_path / "whole" / CHECKPOINT_NAME).exists()  # removed once the outputs are written
    for stop_after in (1, 3):
        out = tmp_path / f"stopped{stop_after}"

        def crash(epoch, row, stop_after=stop_after):
            if epoch == stop_after + 1:
                raise Crash(f"after epoch {stop_after}")

        with pytest.raises(Crash):
            _run({**arguments, "out_dir": str(out)}, on_epoch=crash)
        assert (out / CHECKPOINT_NAME).is_file() and not (out / "metrics.json").exists()
        assert torch.load(out / CHECKPOINT_NAME, weights_only=True)["epoch"] == stop_after
        _run({**arguments, "out_dir": str(out)})
        _assert_same(tmp_path / "whole", out)


def test_a_checkpoint_of_other_parameters_is_ignored_and_replaced(tiny_datasets, split_file, tmp_path, caplog):
    arguments = _arguments(tiny_datasets, split_file, tmp_path / "run")

    def crash(epoch, row):
        if epoch == 3:
            raise Crash

    with pytest.raises(Crash):
        _run(arguments, on_epoch=crash)
    changed = {**arguments, "training": {**arguments["training"], "lr": arguments["training"]["lr"] * 2}}
    seen = []
    with caplog.at_level(logging.WARNING):
        _run(changed, on_epoch=lambda epoch, row: seen.append(epoch), keep_checkpoint=True)
    assert seen == [1, 2, 3, 4, 5]  # started again from epoch 1
    assert "belongs to other parameters" in caplog.text
    assert torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)["epoch"] == 5  # kept on request
    _run(_arguments(tiny_datasets, split_file, tmp_path / "fresh", lr=changed["training"]["lr"]))
    _assert_same(tmp_path / "fresh", tmp_path / "run")


def test_a_torn_checkpoint_starts_the_run_again(tiny_datasets, split_file, tmp_path, caplog):
    arguments = _arguments(tiny_datasets, split_file, tmp_path / "run", epochs=2)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / CHECKPOINT_NAME).write_bytes(b"PK\x03\x04 not a whole checkpoint")
    with caplog.at_level(logging.WARNING):
        _run(arguments)
    assert "unreadable" in caplog.text and (tmp_path / "run" / "metrics.json").is_file()


CHILD = """
import json, sys
from alertvision.study.jobs import TrainJob
from alertvision.training.loop import train_run
args = json.loads(sys.argv[1])
train_run(TrainJob.local(args.pop("dataset_dir"), args.pop("split_file"), args.pop("out_dir"), **args), progress=False)
"""


@pytest.mark.parametrize("modality", ["image", "multimodal"])
def test_a_run_killed_at_a_random_moment_resumes_to_the_same_outputs(tiny_datasets, split_file, tmp_path, modality):
    arguments = _arguments(tiny_datasets, split_file, tmp_path / "whole", modality, epochs=6, patience=6)
    _run(arguments)
    out = tmp_path / "killed"
    killed = {**arguments, "out_dir": str(out)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(killed)], start_new_session=True)
    deadline = time.monotonic() + 300
    while not (out / CHECKPOINT_NAME).is_file() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(random.Random(f"kill-{modality}").uniform(0.0, 0.5))  # somewhere in a later epoch
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run ended before it was killed: make it longer"
    assert not (out / "metrics.json").exists()
    _run(killed)
    _assert_same(tmp_path / "whole", out)
    assert not (out / CHECKPOINT_NAME).exists()


def test_pretraining_killed_after_its_first_checkpoint_resumes_to_the_same_encoder(tmp_path, monkeypatch):
    from alertvision.synthetic.galaxies import write_galaxy_corpus
    from alertvision.training.checkpoint import Checkpointer
    from alertvision.training.pretrain import pretrain_encoder

    corpus = tmp_path / "corpus"
    write_galaxy_corpus(corpus, n=40, size=32, seed=0, progress=False)
    run = {"timm_name": "test_convnext", "input_size": 32, "epochs": 3, "batch_size": 13, "lr": 2e-3}
    run.update(seed=1, threads=1, progress=False, device="cpu", warmup_epochs=0.5)
    pretrain_encoder(corpus, tmp_path / "whole", **run)
    assert not (tmp_path / ".whole.checkpoint.pt").exists()

    save = Checkpointer.save

    def save_then_die(self, state):  # the process dies the moment its first checkpoint is on disk
        save(self, state)
        raise Crash(f"killed after epoch {state['epoch']}")

    monkeypatch.setattr(Checkpointer, "save", save_then_die)
    with pytest.raises(Crash, match="after epoch 1"):
        pretrain_encoder(corpus, tmp_path / "resumed", **run)
    monkeypatch.undo()
    assert (tmp_path / ".resumed.checkpoint.pt").is_file() and not (tmp_path / "resumed").exists()
    pretrain_encoder(corpus, tmp_path / "resumed", **run)
    assert (tmp_path / "whole" / "model.safetensors").read_bytes() == (
        tmp_path / "resumed" / "model.safetensors"
    ).read_bytes()

    def record(folder):
        data = json.loads((folder / "pretrain.json").read_text())
        for row in data["history"]:
            row.pop("seconds")
        return data["history"], {k: v for k, v in data["summary"].items() if "seconds" not in k}

    assert record(tmp_path / "whole") == record(tmp_path / "resumed")
    assert not (tmp_path / ".resumed.checkpoint.pt").exists()


@pytest.mark.parametrize("dies_at_save", [3, 12, 22])  # 7 steps and 8 saves per epoch
def test_a_run_killed_inside_an_epoch_replays_the_epoch_to_the_same_outputs(
    tiny_datasets, split_file, tmp_path, monkeypatch, dies_at_save
):
    """Checkpoints every step (``checkpoint_every_s`` tiny): the run dies right after its Nth save,
    somewhere inside an epoch, and the rerun replays that epoch's batch order and augmentation."""
    from alertvision.training.checkpoint import Checkpointer

    arguments = _arguments(tiny_datasets, split_file, tmp_path / "whole", epochs=3, batch_size=64)
    _run(arguments)
    out = tmp_path / "killed"
    save, saves = Checkpointer.save, []

    def save_then_die(self, state):
        save(self, state)
        saves.append(state["within"])
        if len(saves) == dies_at_save:
            raise Crash

    monkeypatch.setattr(Checkpointer, "save", save_then_die)
    with pytest.raises(Crash):
        _run({**arguments, "out_dir": str(out)}, checkpoint_every_s=1e-9)
    monkeypatch.undo()
    assert saves[-1] is not None and saves[-1]["step"] >= 1  # inside an epoch
    _run({**arguments, "out_dir": str(out)}, checkpoint_every_s=1e-9)
    _assert_same(tmp_path / "whole", out)


def test_sigusr1_saves_at_once_and_exits_75_and_the_rerun_resumes(tiny_datasets, split_file, tmp_path):
    """SLURM's warning before the time limit (``--signal=B:USR1@...``) and preemption's SIGTERM."""
    from alertvision.training.engine import PREEMPTED_EXIT

    arguments = _arguments(tiny_datasets, split_file, tmp_path / "whole", epochs=6, patience=6)
    _run(arguments)
    for signum in (signal.SIGUSR1, signal.SIGTERM):
        out = tmp_path / signal.Signals(signum).name
        stopped = {**arguments, "out_dir": str(out)}
        child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(stopped)])
        deadline = time.monotonic() + 300
        while not (out / CHECKPOINT_NAME).is_file() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(random.Random(signum).uniform(0.0, 0.3))
        child.send_signal(signum)
        assert child.wait(timeout=300) == PREEMPTED_EXIT
        assert not (out / "metrics.json").exists()
        assert torch.load(out / CHECKPOINT_NAME, weights_only=True)["signal"] == signal.Signals(signum).name
        _run(stopped)
        _assert_same(tmp_path / "whole", out)


def test_a_full_disk_while_checkpointing_names_the_checkpoint_and_leaves_no_partial_file(
    tiny_datasets, split_file, mounted_tmpfs
):
    from alertvision.atomic import DiskFullError

    disk = mounted_tmpfs("full", size="24k")  # room for the write check, not for a checkpoint
    arguments = _arguments(tiny_datasets, split_file, disk / "run", epochs=2)
    with pytest.raises(DiskFullError, match=f"the disk is full: could not write {disk / 'run' / CHECKPOINT_NAME}"):
        _run(arguments)
    assert [p.name for p in (disk / "run").iterdir()] == []


def test_a_stop_signal_after_the_last_epoch_still_writes_the_outputs(tiny_datasets, split_file, tmp_path, monkeypatch):
    """SLURM's warning may come while the test split is scored: the job's signal block records it and the
    finished run is written, not lost (without the block SIGUSR1 would kill the process)."""
    from alertvision.training import loop
    from alertvision.training.engine import stop_signals

    arguments = _arguments(tiny_datasets, split_file, tmp_path / "whole", epochs=2)
    _run(arguments)
    predict = loop.predict

    def signal_then_predict(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGUSR1)
        return predict(*args, **kwargs)

    monkeypatch.setattr(loop, "predict", signal_then_predict)
    with stop_signals() as signalled:
        _run({**arguments, "out_dir": str(tmp_path / "signalled")})
    assert signalled == [signal.SIGUSR1]
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the block put the default back
    _assert_same(tmp_path / "whole", tmp_path / "signalled")


def test_a_stop_signal_before_the_first_epoch_stops_the_run_at_its_first_step(tiny_datasets, split_file, tmp_path):
    """A warning while the data loads: the epoch loop of the same job (a nested block) sees it, saves after
    one step and stops with status 75; the rerun resumes to the outputs of an unsignalled run."""
    from alertvision.training.engine import PREEMPTED_EXIT, stop_signals

    arguments = _arguments(tiny_datasets, split_file, tmp_path / "whole", epochs=2)
    _run(arguments)
    out = tmp_path / "early"
    with stop_signals() as signalled, pytest.raises(SystemExit) as stopped:
        with stop_signals() as inner:
            assert inner is signalled  # nested blocks share one record
        os.kill(os.getpid(), signal.SIGTERM)
        _run({**arguments, "out_dir": str(out)})
    assert stopped.value.code == PREEMPTED_EXIT
    state = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert (state["epoch"], state["within"]["step"], state["signal"]) == (0, 1, "SIGTERM")
    _run({**arguments, "out_dir": str(out)})
    _assert_same(tmp_path / "whole", out)


OUTLIVE = """
import os, signal, sys
from alertvision.slurm import outlive_time_limit_warning
print(outlive_time_limit_warning(), flush=True)
os.kill(os.getpid(), signal.SIGUSR1)
print("alive", flush=True)
"""


@pytest.mark.parametrize("in_slurm_job", [True, False])
def test_the_jobs_own_snakemake_outlives_slurms_warning_only_inside_a_slurm_job(in_slurm_job):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    if in_slurm_job:
        env["SLURM_JOB_ID"] = "17"
    done = subprocess.run([sys.executable, "-c", OUTLIVE], env=env, capture_output=True, text=True, timeout=60)
    if in_slurm_job:
        assert (done.returncode, done.stdout) == (0, "True\nalive\n")
        assert "SIGUSR1 (SLURM's time-limit warning) received" in done.stderr
    else:
        assert (done.returncode, done.stdout) == (-signal.SIGUSR1, "False\n")
