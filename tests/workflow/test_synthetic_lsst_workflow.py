"""The Rubin/LSST dataset and the transfer from ZTF through Snakemake: with ``lsst`` in ``grid.datasets``,
rule ingest_lsst builds results/data/lsst from the SYNTHETIC Rubin sky beside results/data/ztf; the ``ztf``
regimen fine-tunes on LSST the encoder of the best ZTF run (Figure 5); each dataset's settings rerun only
its own jobs, and a ZTF change reruns the transfer runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import dry_run_jobs

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")]
TARGETS = ("results/figure2.pdf", "results/figure5.pdf")
ZTF_RUN = "results/runs/ztf/image/convnext/none/f100/s0"

pytestmark = pytest.mark.e2e


def snakemake(workdir: Path, *args: str) -> str:
    out = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True)
    assert out.returncode == 0, f"snakemake {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def study(workdir: Path, **data) -> None:
    """A tiny study of both alert datasets: one-epoch CNN and ConvNeXt (at 32 px) runs, ConvNeXt on LSST
    also from the ZTF run's encoder; ``data`` merged over its data block. 40 sources: with 16 the Rubin
    sky's test split can hold one class only (the split refuses it)."""
    config = {
        "data": {"source": "synthetic", "synthetic": {"n_sources": 40, "seed": 3}, **data},
        "splits": {"probabilities": [0.5, 0.25, 0.25]},
        "grid": {
            "datasets": ["ztf", "lsst"],
            "archs": ["cnn", "convnext"],
            "regimens": ["none", "ztf"],
            "fractions": [100],
            "seeds": [0],
        },
        "archs": {"cnn": {"kind": "cnn"}, "convnext": {"kind": "timm", "timm_name": "convnext_pico", "input_size": 32}},
        "regimens": {"none": {"weights": {}}, "ztf": {"transfer": {"from": "ztf"}}},
        "training": {"epochs": 1, "patience": 1},
        "embed": {"enabled": False},
        "benchmark": {"enabled": False},
    }
    (workdir / "config").mkdir(exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))


def planned(workdir: Path) -> tuple[dict[str, int], list[str]]:
    """The jobs per rule a dry run of both figures plans, and its training jobs as dataset/arch/regimen."""
    out = snakemake(workdir, "-n", *TARGETS)
    runs = re.findall(r"wildcards:.*\bdataset=(\w+), modality=\w+, arch=(\w+), regimen=(\w+)", out)
    return dry_run_jobs(out), sorted("/".join(r) for r in runs)


def test_lsst_beside_ztf_with_transfer_from_ztf_and_partial_reruns(tmp_path):
    study(tmp_path)
    jobs, runs = planned(tmp_path)
    assert {k: jobs.get(k) for k in ("ingest_ztf", "ingest_lsst", "split", "transfer_weights", "figure5")} == {
        "ingest_ztf": 1,
        "ingest_lsst": 1,
        "split": 2,
        "transfer_weights": 1,
        "figure5": 1,
    }
    # the ztf regimen trains the timm architecture on LSST only
    assert runs == ["lsst/cnn/none", "lsst/convnext/none", "lsst/convnext/ztf", "ztf/cnn/none", "ztf/convnext/none"]
    snakemake(tmp_path, "--cores", "1", *TARGETS)
    ztf, lsst = (json.loads((tmp_path / f"results/data/{d}/manifest.json").read_text()) for d in ("ztf", "lsst"))
    assert (ztf["dataset"], ztf["survey"], ztf["synthetic"]) == ("ztf", "ztf", True)
    assert (lsst["dataset"], lsst["survey"], lsst["synthetic"], lsst["source"]) == ("lsst", "lsst", True, "synthetic")
    # the same simulated sources (each survey's cuts drop some): Rubin's alerts name their source's ZTF objectId
    lsst_alerts = pd.read_parquet(tmp_path / "results/data/lsst/alerts.parquet", columns=["ztf_objectId"])
    ztf_alerts = pd.read_parquet(tmp_path / "results/data/ztf/alerts.parquet", columns=["objectId"])
    assert set(lsst_alerts["ztf_objectId"]) & set(ztf_alerts["objectId"])
    # Figure 2 keeps the paper's rows; Figure 5's table holds the LSST runs of every regimen
    assert set(pd.read_csv(tmp_path / "results/tables/roc_auc.csv")["dataset"]) == {"ztf"}
    transfer = pd.read_csv(tmp_path / "results/tables/transfer_roc_auc.csv")
    assert set(transfer["dataset"]) == {"lsst"} and set(transfer["regimen"]) == {"none", "ztf"}
    assert (tmp_path / "results/figure5.pdf").read_bytes()[:5] == b"%PDF-"
    # the weights' provenance: the ZTF run chosen on its validation split, named in the LSST run's metrics
    source = json.loads((tmp_path / "resources/weights/ztf/convnext/source.json").read_text())
    assert source["transfer"]["run"] == ZTF_RUN and source["transfer"]["chosen_on"] == "validation split"
    metrics = json.loads((tmp_path / "results/runs/lsst/image/convnext/ztf/f100/s0/metrics.json").read_text())
    assert metrics["weights_from_run"]["run"] == ZTF_RUN and metrics["survey"] == "lsst"
    assert planned(tmp_path) == ({}, [])
    # an LSST-only setting reruns the LSST ingest and what follows from it; nothing of ZTF's
    synthetic = {"n_sources": 40, "seed": 3}
    for lsst_only in ({"lsst": {"triplet": {"size": 31}}}, {"synthetic": {**synthetic, "lsst": {"cutout_size": 24}}}):
        study(tmp_path, **lsst_only)
        jobs, runs = planned(tmp_path)
        assert "ingest_ztf" not in jobs and "transfer_weights" not in jobs and jobs["ingest_lsst"] == 1, lsst_only
        assert runs == ["lsst/cnn/none", "lsst/convnext/none", "lsst/convnext/ztf"], lsst_only
    # a ZTF-only setting reruns the ZTF runs, the transfer weights and the runs trained from them; not LSST's own
    study(tmp_path, masked_pixels="zero")
    jobs, runs = planned(tmp_path)
    assert jobs.get("ingest_ztf") == 1 and "ingest_lsst" not in jobs and jobs["transfer_weights"] == 1
    assert runs == ["lsst/convnext/ztf", "ztf/cnn/none", "ztf/convnext/none"]
