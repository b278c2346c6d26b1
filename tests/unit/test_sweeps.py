"""Optuna sweeps: the search space, the seeded sampler, shared studies, retries, pruning, the reports."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState
from postgres_server import postgres_url  # noqa: F401 (the fixture)

from alertvision.data.contract import open_dataset
from alertvision.study.jobs import TrainJob, training_params
from alertvision.sweeps import (
    TABLE1,
    make_objective,
    make_pruner,
    open_study,
    run_worker,
    search_space,
    state_counts,
    study_name,
    suggest,
    summary_table,
    sweep_finalize,
    sweep_run,
)
from alertvision.sweeps.report import trials_frame
from alertvision.sweeps.space import CNN_SPACE, SearchSpaceError, split_params
from alertvision.sweeps.storage import display_storage, resolve_storage
from alertvision.sweeps.worker import SurplusTrial, _admitted

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = search_space({})
NAME = study_name("ztf", "image", "cnn", "none", 100)


def toy_objective(delay: float = 0.0):
    """A fast stand-in for training: a smooth function of the sampled parameters."""

    def objective(trial: optuna.Trial) -> float:
        p = suggest(trial, SPACE)
        time.sleep(delay)
        return -abs(math.log10(p["lr"]) + 6.5) + p["dropout"] - p["batch_size"] / 1000

    return objective


def cnn_training(tiny_datasets, **overrides) -> dict:
    return {**training_params(tiny_datasets["config"], "cnn"), "epochs": 2, "patience": 2, **overrides}


# --- search space ----------------------------------------------------------------------------------


def test_table1_is_the_default_and_entries_override_add_or_drop():
    assert search_space({}) == TABLE1 == search_space(None)
    assert TABLE1["lr"]["choices"] == [1e-6, 5e-6, 1e-7, 5e-7] and TABLE1["dropout"] == {
        "type": "float",
        "low": 0.3,
        "high": 0.9,
    }
    space = search_space(
        {
            "search_space": {
                "lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
                "dense2": None,
                "weight_decay": {"type": "float", "low": 0, "high": 0.1},
            }
        }
    )
    assert space["lr"]["log"] and "dense2" not in space and "weight_decay" in space
    assert space["dense1"] == TABLE1["dense1"]
    with pytest.raises(SearchSpaceError, match="sweep.search_space.momentum"):
        search_space({"search_space": {"momentum": {"type": "float", "low": 0, "high": 1}}})
    with pytest.raises(SearchSpaceError, match="sweep.search_space.lr"):
        search_space({"search_space": {"lr": {"type": "float", "low": 0, "high": 1, "log": True}}})
    # the sweep block is shared: a CNN key searches the CNN only (as metadata keys search multi-modal models only)
    cnn_key = {"search_space": {"conv_kernel": {"type": "categorical", "choices": [3]}}}
    assert "conv_kernel" not in search_space(cnn_key, kind="timm")
    assert search_space(cnn_key, kind="cnn")["conv_kernel"]["choices"] == [3]
    trial = optuna.trial.FixedTrial(
        {"lr": 1e-3, "dropout": 0.5, "weight_decay": 0.01, "dense1": 256, "warmup_epochs": 2, "batch_size": 16}
    )
    assert suggest(trial, space) == {
        "lr": 1e-3,
        "warmup_epochs": 2,
        "batch_size": 16,
        "dense1": 256,
        "dropout": 0.5,
        "weight_decay": 0.01,
    }


def test_the_cnn_space_adds_its_own_keys_to_table1():
    space = search_space({}, kind="cnn")
    assert set(space) == set(TABLE1) | set(CNN_SPACE)
    assert space["conv1_channels"]["choices"] == [16, 32, 64] and 1e-4 in space["lr"]["choices"]
    assert set(TABLE1["lr"]["choices"]) <= set(space["lr"]["choices"])
    assert search_space({}, modality="multimodal", kind="none").keys() == search_space({}, "multimodal").keys()
    assert split_params({"lr": 1e-4, "conv_kernel": 3, "dense1": 8}) == ({"conv_kernel": 3}, {"lr": 1e-4, "dense1": 8})


def test_a_cnn_trial_builds_the_cnn_it_sampled(tiny_datasets, split_file):
    config = tiny_datasets["config"]
    space = {
        "conv1_channels": {"type": "categorical", "choices": [4]},
        "conv2_channels": {"type": "categorical", "choices": [6]},
        "conv_kernel": {"type": "categorical", "choices": [3]},
    }
    objective = make_objective(
        TrainJob.local(
            tiny_datasets["ztf"],
            split_file,
            None,
            model=config["archs"]["cnn"],
            training=cnn_training(tiny_datasets, epochs=1),
            seed=0,
        ),
        space=space,
        seed=0,
    )
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=1)
    training = cnn_training(tiny_datasets)
    convs = (3 * 4 * 9 + 4) + (4 * 4 * 9 + 4) + (4 * 6 * 9 + 6) + (6 * 6 * 9 + 6)
    head = (6 * 7 * 7 * training["dense1"] + training["dense1"]) + (training["dense1"] + 1)
    assert training["dense2"] is None
    assert study.trials[0].user_attrs["metrics"]["params"] == convs + head


def test_storage_comes_from_the_config_then_the_environment_then_a_journal(monkeypatch, tmp_path):
    journal = tmp_path / "study.journal"
    monkeypatch.delenv("ALERTVISION_SWEEP_STORAGE", raising=False)
    assert resolve_storage({}, journal) == str(journal)
    monkeypatch.setenv("ALERTVISION_SWEEP_STORAGE", "postgresql://u:pw@db/x")
    assert resolve_storage({}, journal) == "postgresql://u:pw@db/x"
    assert resolve_storage({"storage": "sqlite:///a.db"}, journal) == "sqlite:///a.db"
    assert "pw" not in display_storage("postgresql://u:pw@db/x")
    assert isinstance(make_pruner({"kind": "median"}, 5), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("hyperband", 5), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner(None, 5), optuna.pruners.NopPruner)


# --- sampler and worker ----------------------------------------------------------------------------


def test_seeded_tpe_repeats_its_sequence_in_one_worker(tmp_path):
    def params(seed: int, path: str) -> list[dict]:
        study = open_study(NAME, str(tmp_path / path), seed, startup_trials=4)
        run_worker(study, toy_objective(), 10)
        return [t.params for t in study.trials]

    a, b, c = params(3, "a.journal"), params(3, "b.journal"), params(4, "c.journal")
    assert a == b and len(a) == 10
    assert a != c


def test_a_rerun_adds_no_trials_and_a_larger_total_only_the_difference(tmp_path):
    storage = str(tmp_path / "study.journal")
    assert run_worker(open_study(NAME, storage, 0), toy_objective(), 3) == [0, 1, 2]
    study = open_study(NAME, storage, 0)  # a new process opening the same study
    assert run_worker(study, toy_objective(), 3) == []
    assert run_worker(study, toy_objective(), 5) == [3, 4]
    assert len(study.trials) == 5 and state_counts(study)["complete"] == 5


def test_a_trial_asked_for_beyond_the_total_is_given_back_before_it_samples(tmp_path):
    study = open_study(NAME, str(tmp_path / "study.journal"), 0)
    run_worker(study, toy_objective(), 1)
    ran: list[int] = []
    with pytest.raises(SurplusTrial):  # as when another worker asked for the last trial a moment earlier
        study.optimize(_admitted(toy_objective(), 1, ran), n_trials=1, catch=())
    assert ran == [] and study.trials[1].params == {} and state_counts(study)["surplus"] == 1
    assert run_worker(study, toy_objective(), 2) == [2]


KILLED_WORKER = textwrap.dedent("""
    import os, signal, sys, time
    from alertvision.sweeps import open_study, run_worker, search_space, suggest
    space = search_space({})
    def objective(trial):
        suggest(trial, space)
        time.sleep(1.0)  # long enough for the heartbeat thread to stamp the trial with this process
        os.kill(os.getpid(), signal.SIGKILL)
    run_worker(open_study(sys.argv[2], sys.argv[1], 0), objective, 3)
""")


def _killed_worker_then_a_worker(storage: str, name: str) -> tuple[optuna.Study, list[int]]:
    proc = subprocess.run([sys.executable, "-c", KILLED_WORKER, storage, name], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    study = open_study(name, storage, 0)
    assert [t.state for t in study.trials] == [TrialState.RUNNING]  # left behind by the killed process
    return study, run_worker(study, toy_objective(), 3)


def test_a_trial_whose_worker_was_killed_is_failed_and_retried(tmp_path):
    study, ran = _killed_worker_then_a_worker(str(tmp_path / "study.journal"), NAME)
    trials = study.trials
    assert trials[0].state == TrialState.FAIL
    assert trials[1].system_attrs["failed_trial"] == 0 and trials[1].params == trials[0].params
    assert ran == [1, 2, 3] and state_counts(study)["complete"] == 3


def test_a_silent_trial_of_another_machine_is_failed_after_the_grace_period(tmp_path):
    storage = str(tmp_path / "study.journal")
    study = open_study(NAME, storage, 0, heartbeat_s=1, grace_s=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trial = study.ask()  # a trial nobody beats for: its worker vanished without a trace here
    suggest(trial, SPACE)
    time.sleep(1.5)
    run_worker(study, toy_objective(), 1)
    assert study.trials[0].state == TrialState.FAIL and study.trials[1].params == study.trials[0].params


# --- the training objective ------------------------------------------------------------------------


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_pruning_stops_training_at_the_epoch_hook(tiny_datasets, split_file, tmp_path):
    config = tiny_datasets["config"]
    objective = make_objective(
        TrainJob.local(
            tiny_datasets["ztf"],
            split_file,
            None,
            model=config["archs"]["cnn"],
            training=cnn_training(tiny_datasets, epochs=3, patience=3),
            seed=0,
        ),
        space=SPACE,
        seed=0,
    )
    study = open_study(NAME, str(tmp_path / "study.journal"), 0, _AlwaysPrune())
    run_worker(study, objective, 1)
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [1]
    assert trial.intermediate_values[1] < 0  # validation loss, negated for the maximised ROC AUC
    row = trials_frame(study).iloc[0]
    assert row["state"] == "PRUNED" and row["epochs"] == 1 and pd.isna(row["value"])  # not Optuna's stand-in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.journal"]


class _RecordingImages:
    """Memory-mapped images that remember which rows were read."""

    def __init__(self, images):
        self.images, self.rows = images, set()
        self.shape, self.dtype = images.shape, images.dtype

    def __getitem__(self, index):
        self.rows.update(np.atleast_1d(np.arange(len(self.images))[index]).tolist())
        return self.images[index]

    def __len__(self) -> int:
        return len(self.images)


def test_a_trial_never_reads_the_test_split(tiny_datasets, split_file, monkeypatch):
    import alertvision.training.loop as loop

    recorders = []

    def open_recorded(directory):
        data = open_dataset(directory)
        recorders.append(_RecordingImages(data.images))
        return dataclasses.replace(data, images=recorders[-1])

    monkeypatch.setattr(loop, "open_dataset", open_recorded)
    config = tiny_datasets["config"]
    objective = make_objective(
        TrainJob.local(
            tiny_datasets["ztf"],
            split_file,
            None,
            model=config["archs"]["cnn"],
            training=cnn_training(tiny_datasets, epochs=1),
            seed=0,
        ),
        space=SPACE,
        seed=0,
    )
    value = objective(
        optuna.trial.FixedTrial(
            {**{k: v["choices"][0] for k, v in SPACE.items() if v["type"] == "categorical"}, "dropout": 0.5}
        )
    )
    table = pd.read_parquet(split_file)
    read = recorders[0].rows
    assert 0.0 <= value <= 1.0
    assert read and read.isdisjoint(table.loc[table["split"] == "test", "row"])
    assert read == set(table.loc[table["split"].isin(["train", "val"]), "row"])


# --- the pipeline steps ----------------------------------------------------------------------------


def test_sweep_run_then_finalize_writes_best_trials_and_plot(tiny_datasets, split_file, tmp_path, monkeypatch):
    monkeypatch.delenv("ALERTVISION_SWEEP_STORAGE", raising=False)
    config = tiny_datasets["config"]
    training = cnn_training(tiny_datasets)
    job = TrainJob.local(
        tiny_datasets["ztf"], split_file, None, model=config["archs"]["cnn"], training=training, seed=0
    )
    kwargs = dict(sweep_cfg={"trials": 2, "seed": 1, "pruner": {"kind": "median"}}, study_name=NAME, progress=False)
    first = sweep_run(job, tmp_path, worker_report=tmp_path / "worker0.json", **kwargs)
    assert first["ran"] == [0, 1] and (tmp_path / "study.journal").is_file() and (tmp_path / "worker0.json").is_file()
    assert sweep_run(job, tmp_path, **kwargs)["ran"] == []

    best = sweep_finalize(tmp_path, study_name=NAME, training=training, sweep_cfg=kwargs["sweep_cfg"])
    saved = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert saved == best and saved["source"] == "best_trial" and saved["n_trials"] == 2
    assert 0.0 <= saved["value"] <= 1.0 and set(saved["params"]) == set(TABLE1) | set(CNN_SPACE)
    assert saved["config"] == {
        "dataset": "ztf",
        "modality": "image",
        "arch": "cnn",
        "regimen": "none",
        "fraction": "100",
    }
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert list(trials["number"]) == [0, 1] and (trials["state"] == "COMPLETE").all()
    assert (trials["epochs"] == 2).all() and (tmp_path / "trials.png").stat().st_size > 0
    summary = summary_table([tmp_path / "best.yaml"])
    assert summary.loc[0, "arch"] == "cnn" and summary.loc[0, "value"] == saved["value"]


def test_zero_trials_keep_the_default_hyperparameters(tiny_datasets, split_file, tmp_path, monkeypatch):
    monkeypatch.delenv("ALERTVISION_SWEEP_STORAGE", raising=False)
    training = cnn_training(tiny_datasets)
    config = tiny_datasets["config"]
    report = sweep_run(
        TrainJob.local(tiny_datasets["ztf"], split_file, None, model=config["archs"]["cnn"], training=training, seed=0),
        tmp_path,
        sweep_cfg={"trials": 0},
        study_name=NAME,
    )
    assert report["ran"] == [] and not (tmp_path / "study.journal").exists()
    best = sweep_finalize(
        tmp_path, study_name=NAME, training=training, sweep_cfg={"trials": 0}, plot=tmp_path / "trials.pdf"
    )
    assert best["value"] is None and best["source"] == "defaults" and "sweep.trials is 0" in best["note"]
    assert best["params"] == {k: training[k] for k in TABLE1}
    assert pd.read_csv(tmp_path / "trials.csv").empty and (tmp_path / "trials.pdf").is_file()


def test_schema_sweep_defaults_match_the_library():
    from alertvision.config import schema
    from alertvision.sweeps import SWEEP_DEFAULTS

    block = schema()["properties"].get("sweep")
    if block is None:
        pytest.skip("the config schema has no sweep block yet")
    from alertvision.config import validate_config

    assert validate_config({})["sweep"] == SWEEP_DEFAULTS


# --- several worker processes on one study ---------------------------------------------------------

SHARED_WORKER = textwrap.dedent("""
    import json, math, sys, time
    from pathlib import Path
    from alertvision.sweeps import open_study, run_worker, search_space, suggest
    storage, name, total, ready, me = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]
    space = search_space({})
    def objective(trial):
        p = suggest(trial, space)
        time.sleep(0.3)
        return p["dropout"] - abs(math.log10(p["lr"]) + 6.5)
    study = open_study(name, storage, 0, heartbeat_s=1)
    (ready / me).touch()
    while len(list(ready.iterdir())) < 2:  # start together, so that both get trials
        time.sleep(0.05)
    print(json.dumps(run_worker(study, objective, total, poll_s=0.2)))
""")


def _two_workers(storage: str, tmp_path, total: int) -> tuple[optuna.Study, list[list[int]]]:
    ready = tmp_path / "ready"
    ready.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SHARED_WORKER, storage, NAME, str(total), str(ready), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ},
        )
        for i in range(2)
    ]
    ran = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()[-3000:]
        ran.append(yaml.safe_load(out.decode().strip().splitlines()[-1]))
    return open_study(NAME, storage, 0), ran


def _check_shared(study: optuna.Study, ran: list[list[int]], total: int) -> None:
    complete = [t.number for t in study.trials if t.state == TrialState.COMPLETE]
    numbers = [t.number for t in study.trials]
    assert len(complete) == total and len(numbers) == len(set(numbers))
    assert all(ran) and sorted(ran[0] + ran[1]) == sorted(complete)
    assert state_counts(study)["running"] == 0 and state_counts(study)["waiting"] == 0
    assert trials_frame(study)["worker"].nunique() == 2  # every trial stamped with its worker process


def test_two_worker_processes_share_a_journal_study(tmp_path):
    study, ran = _two_workers(str(tmp_path / "study.journal"), tmp_path, 7)
    _check_shared(study, ran, 7)


def test_two_worker_processes_share_a_postgres_study(postgres_url, tmp_path):  # noqa: F811
    study, ran = _two_workers(postgres_url, tmp_path, 7)
    _check_shared(study, ran, 7)
    assert "sweep-secret" not in display_storage(postgres_url)


def test_a_killed_worker_s_trial_is_retried_in_postgres(postgres_url):  # noqa: F811
    study, ran = _killed_worker_then_a_worker(postgres_url, study_name("ztf", "image", "cnn", "none", 100, "killed"))
    trials = study.trials
    assert trials[0].state == TrialState.FAIL and trials[1].params == trials[0].params
    assert ran == [1, 2, 3] and state_counts(study)["complete"] == 3
