"""The synthetic Rubin sky through Snakemake: ``data.survey: lsst`` reaches the ingest (an LSST dataset, labelled
SYNTHETIC), its settings rerun the ingest, and they rerun nothing of a ZTF study."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import dry_run_jobs

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")]
TARGET = "results/data/ztf/manifest.json"


def snakemake(workdir: Path, *args: str) -> str:
    out = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True)
    assert out.returncode == 0, f"snakemake {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def study(workdir: Path, survey: str, cutout_size: int) -> None:
    config = {
        "data": {"source": "synthetic", "survey": survey, "synthetic": {"n_sources": 16, "seed": 3}},
        "splits": {"probabilities": [0.6, 0.2, 0.2]},
        "grid": {"datasets": ["ztf"]},
    }
    config["data"]["synthetic"]["lsst"] = {"cutout_size": cutout_size}
    (workdir / "config").mkdir(exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))


def planned(workdir: Path) -> set[str]:
    return set(dry_run_jobs(snakemake(workdir, "-n", TARGET)))


def test_the_synthetic_rubin_sky_goes_through_the_pipeline_and_its_settings_rerun_only_it(tmp_path):
    lsst, ztf = tmp_path / "lsst", tmp_path / "ztf"
    for folder, survey in ((lsst, "lsst"), (ztf, "ztf")):
        folder.mkdir()
        study(folder, survey, 30)
        snakemake(folder, "--cores", "1", TARGET)
    manifest = json.loads((lsst / TARGET).read_text())
    assert manifest["survey"] == "lsst" and manifest["synthetic"] is True and manifest["source"] == "synthetic"
    assert json.loads((ztf / TARGET).read_text())["survey"] == "ztf"
    for folder, survey, reruns in ((lsst, "lsst", {"ingest_ztf"}), (ztf, "ztf", set())):
        study(folder, survey, 24)
        assert planned(folder) == reruns, survey
