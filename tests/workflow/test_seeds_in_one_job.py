"""grid.seeds_in_one_job: one training job per grid cell for all its seeds, one run folder per seed,
the same runs as one job per seed."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml
from conftest import TINY_CONFIG, dry_run_jobs

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")]
TABLE = "results/tables/roc_auc.csv"


def snakemake(workdir: Path, *args: str) -> str:
    out = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True)
    assert out.returncode == 0, f"snakemake {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _study(root: Path, one_job: bool) -> Path:
    config = copy.deepcopy(TINY_CONFIG)
    config["grid"].update(
        datasets=["ztf"], archs=["cnn"], regimens=["none"], fractions=[100], seeds=[0, 1], seeds_in_one_job=one_job
    )
    config["archs"]["cnn"].update(training={"epochs": 1}, sweep={"trials": 0})
    (root / "config").mkdir(parents=True)
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def test_all_seeds_of_a_cell_train_in_one_job_into_their_own_folders(tmp_path):
    grouped, separate = _study(tmp_path / "grouped", True), _study(tmp_path / "separate", False)
    jobs = dry_run_jobs(snakemake(grouped, "-n", TABLE))
    assert jobs.get("train_seeds") == 1 and "train" not in jobs
    assert dry_run_jobs(snakemake(separate, "-n", TABLE)).get("train") == 2
    snakemake(grouped, "--cores", "2", TABLE)

    cell = grouped / "results/runs/ztf/image/cnn/none/f100"
    for seed in (0, 1):  # the rule `train` runs this command's step for one seed
        alone = tmp_path / f"alone{seed}"
        cli = [sys.executable, "-m", "alertvision", "train", "-q", "--config", str(grouped / "config/config.yaml")]
        cli += ["--arch", "cnn", "--seed", str(seed), "--results", str(grouped / "results"), "--out-dir", str(alone)]
        done = subprocess.run(cli, capture_output=True, text=True, cwd=grouped)
        assert done.returncode == 0, done.stderr
        a, b = (pd.read_parquet(r / "predictions.parquet") for r in (cell / f"s{seed}", alone))
        pd.testing.assert_frame_equal(a, b)  # the same run, whichever job trained it
        assert json.loads((cell / f"s{seed}" / "metrics.json").read_text())["seed"] == seed
    assert pd.read_csv(grouped / TABLE)["n_seeds"].tolist() == [2]
    # a seed's lost output is made again by its cell's job
    lost = "results/runs/ztf/image/cnn/none/f100/s1/metrics.json"
    (grouped / lost).unlink()
    assert dry_run_jobs(snakemake(grouped, "-n", lost)) == {"train_seeds": 1}
