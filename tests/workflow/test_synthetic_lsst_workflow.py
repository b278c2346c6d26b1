"""The Rubin/LSST dataset through Snakemake: with ``lsst`` in ``grid.datasets``, rule ingest_lsst builds
results/data/lsst from the SYNTHETIC Rubin sky beside results/data/ztf, the grid trains on both, and each
dataset's settings rerun only its own jobs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml
from conftest import dry_run_jobs

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
FIGURE = "results/figure2.pdf"


def snakemake(workdir: Path, *args: str) -> str:
    out = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True)
    assert out.returncode == 0, f"snakemake {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def study(workdir: Path, **data) -> None:
    """A tiny study of both alert datasets, one one-epoch CNN run each; ``data`` merged over its data block.
    40 sources: with 16 the Rubin sky's test split can hold one class only (the split refuses it)."""
    config = {
        "data": {"source": "synthetic", "synthetic": {"n_sources": 40, "seed": 3}, **data},
        "splits": {"probabilities": [0.5, 0.25, 0.25]},
        "grid": {"datasets": ["ztf", "lsst"], "archs": ["cnn"], "regimens": ["none"], "fractions": [100], "seeds": [0]},
        "archs": {"cnn": {"kind": "cnn", "training": {"epochs": 1, "patience": 1}}},
        "embed": {"enabled": False},
        "benchmark": {"enabled": False},
    }
    (workdir / "config").mkdir(exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))


def planned(workdir: Path, target: str = FIGURE) -> tuple[dict[str, int], set[str]]:
    """The jobs per rule a dry run plans, and the datasets of its jobs' wildcards."""
    out = snakemake(workdir, "-n", target)
    return dry_run_jobs(out), set(re.findall(r"wildcards:.*\bdataset=(\w+)", out))


def test_the_lsst_dataset_is_built_beside_ztf_trained_on_and_rerun_alone(tmp_path):
    study(tmp_path)
    # a dry run plans the ingest, split and training run of each dataset
    jobs, datasets = planned(tmp_path)
    assert {k: jobs.get(k) for k in ("ingest_ztf", "ingest_lsst", "split", "train")} == {
        "ingest_ztf": 1,
        "ingest_lsst": 1,
        "split": 2,
        "train": 2,
    }
    assert datasets == {"ztf", "lsst"}
    snakemake(tmp_path, "--cores", "1", FIGURE)
    ztf, lsst = (json.loads((tmp_path / f"results/data/{d}/manifest.json").read_text()) for d in ("ztf", "lsst"))
    assert (ztf["dataset"], ztf["survey"], ztf["synthetic"]) == ("ztf", "ztf", True)
    assert (lsst["dataset"], lsst["survey"], lsst["synthetic"], lsst["source"]) == ("lsst", "lsst", True, "synthetic")
    # the same simulated sources (each survey's cuts drop some): Rubin's alerts name their source's ZTF objectId
    lsst_alerts = pd.read_parquet(tmp_path / "results/data/lsst/alerts.parquet", columns=["ztf_objectId"])
    ztf_alerts = pd.read_parquet(tmp_path / "results/data/ztf/alerts.parquet", columns=["objectId"])
    assert set(lsst_alerts["ztf_objectId"]) & set(ztf_alerts["objectId"])
    table = pd.read_csv(tmp_path / "results/tables/roc_auc.csv")
    assert sorted(table["dataset"]) == ["lsst", "ztf"] and table["synthetic"].all()
    assert planned(tmp_path) == ({}, set())
    # an LSST-only setting reruns the LSST ingest and what follows from it; nothing of ZTF's
    synthetic = {"n_sources": 40, "seed": 3}
    for lsst_only in ({"lsst": {"triplet": {"size": 31}}}, {"synthetic": {**synthetic, "lsst": {"cutout_size": 24}}}):
        study(tmp_path, **lsst_only)
        jobs, datasets = planned(tmp_path)
        assert {k: jobs.get(k) for k in ("ingest_ztf", "ingest_lsst", "split", "train")} == {
            "ingest_ztf": None,
            "ingest_lsst": 1,
            "split": 1,
            "train": 1,
        }, lsst_only
        assert datasets == {"lsst"}, lsst_only
    # a ZTF-only setting reruns the ZTF ingest and what follows from it; nothing of LSST's
    study(tmp_path, masked_pixels="zero")
    jobs, datasets = planned(tmp_path)
    assert jobs.get("ingest_ztf") == 1 and "ingest_lsst" not in jobs and datasets == {"ztf"}
