"""Kill anything, lose nothing: a small study whose jobs (or Snakemake itself) are SIGKILLed at random
moments, then finished with `--rerun-incomplete`, ends with the tables of an uninterrupted run."""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import yaml
from conftest import TINY_CONFIG

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--cores", "2"]
TARGETS = ["results/tables/roc_auc.csv", "results/tables/f1.csv"]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _config() -> dict:
    """Image and multi-modal runs of the CNN and ConvNeXt on the ZTF dataset, no sweeps (two workers
    sharing a TPE study are not reproducible), no Table 2 or Figure 4."""
    config = copy.deepcopy(TINY_CONFIG)
    config["grid"].update(datasets=["ztf"], archs=["cnn", "convnext"], modalities=["image", "multimodal"])
    config["archs"]["cnn"].pop("sweep")
    config["archs"]["cnn"]["training"] = {"epochs": 6}
    config["multimodal"] = {"archs": ["cnn"], "regimens": ["none"]}
    config["benchmark"] = {"enabled": False}
    config["embed"] = {"enabled": False}
    return config


def _study(folder: Path) -> Path:
    (folder / "config").mkdir(parents=True)
    (folder / "config" / "config.yaml").write_text(yaml.safe_dump(_config()))
    return folder


def _check_no_partial_file(results: Path) -> None:
    """Every file under a final name reads whole."""
    for path in results.rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".parquet":
            pd.read_parquet(path)
        elif path.suffix == ".csv":
            pd.read_csv(path)
        elif path.suffix == ".npy":
            images = np.load(path, mmap_mode="r")
            assert path.stat().st_size >= images.nbytes, path


def _jobs(snakemake: psutil.Process) -> list[psutil.Process]:
    """The job processes Snakemake runs now (its children and their children)."""
    try:
        return [p for p in snakemake.children(recursive=True) if p.is_running()]
    except psutil.NoSuchProcess:
        return []


def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    whole = _study(tmp_path / "whole")
    subprocess.run([*SNAKEMAKE, "--directory", str(whole), *TARGETS], check=True, capture_output=True)

    killed = _study(tmp_path / "killed")
    rng = random.Random(16)
    kills = []
    for attempt in range(10):
        run = subprocess.Popen(
            [*SNAKEMAKE, "--directory", str(killed), "--rerun-incomplete", *TARGETS],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(rng.uniform(2.0, 12.0))
        if run.poll() is not None:
            break  # the study finished before this kill
        jobs = _jobs(psutil.Process(run.pid))
        if jobs and rng.random() < 0.7:  # one job and what it started
            victim = rng.choice(jobs)
            kills.append(" ".join(victim.cmdline()[-2:]) if victim.is_running() else "a job that just ended")
            for p in [victim, *victim.children(recursive=True)]:
                try:
                    p.send_signal(signal.SIGKILL)
                except psutil.NoSuchProcess:
                    pass
            run.wait(timeout=600)
        else:  # Snakemake and every job: the whole process group
            kills.append("the whole run")
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
            subprocess.run([*SNAKEMAKE, "--directory", str(killed), "--unlock"], check=True, capture_output=True)
        _check_no_partial_file(killed / "results")
    assert len(kills) >= 5, f"only {len(kills)} kills landed before the study finished: {kills}"
    final = subprocess.run(
        [*SNAKEMAKE, "--directory", str(killed), "--rerun-incomplete", *TARGETS], capture_output=True, text=True
    )
    assert final.returncode == 0, final.stderr[-3000:]
    _check_no_partial_file(killed / "results")
    for table in TARGETS:
        pd.testing.assert_frame_equal(pd.read_csv(whole / table), pd.read_csv(killed / table), check_exact=True)
    leftovers = [p for p in (killed / "results").rglob(".*") if p.is_file()]
    assert leftovers == [], f"checkpoints or temporaries left behind: {leftovers}"
