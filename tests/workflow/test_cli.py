"""The command line: every step answers --help; a bad config value is a clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMANDS = [
    "config",
    "ingest",
    "ingest-lsst",
    "fetch-kowalski",
    "ls-dataset",
    "split",
    "weights",
    "galaxy-corpus",
    "pretrain",
    "train",
    "export",
    "export-best",
    "sweep",
    "sweep-worker",
    "sweep-finalize",
    "sweep-summary",
    "aggregate",
    "figure2",
    "f1",
    "figure3",
    "benchmark",
    "table2",
    "embed",
    "umap",
    "figure4",
    "outliers",
]


def _run(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "alertvision", *args], cwd=cwd, capture_output=True, text=True)


def test_help_lists_every_step():
    out = _run("--help")
    assert out.returncode == 0
    for command in COMMANDS:
        assert command in out.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_step_answers_help(command):
    out = _run(command, "--help")
    assert out.returncode == 0 and "usage: alertvision" in out.stdout


def test_bad_config_value_names_the_key():
    out = _run("config", "--set", "training.batch_size=1")
    assert out.returncode == 2
    assert "config key training.batch_size" in out.stderr


def test_a_key_given_twice_or_a_shadowed_set_value_is_reported(tmp_path):
    """Before, the file's first `epochs` was dropped silently, and --set training.epochs=1 silently did not
    reach the CNN (its archs.cnn.training.epochs wins)."""
    study = tmp_path / "study.yaml"
    study.write_text("grid:\n  archs: [cnn]\ntraining:\n  epochs: 2\n  epochs: 6\n")
    out = _run("config", "--config", str(study))
    assert out.returncode == 2
    assert f"config file {study}, line 5: key 'epochs' is given twice (first on line 4)" in out.stderr
    out = _run("config", "--set", "training={epochs: 1, epochs: 2}")
    assert out.returncode == 2 and "--set training, line 1: key 'epochs' is given twice" in out.stderr
    out = _run("config", "--set", "training.epochs=1")
    assert out.returncode == 0
    assert (
        "--set training.epochs=1 does not apply to the cnn runs: archs.cnn.training.epochs=12 overrides it"
        in out.stderr
    )
    out = _run("config", "--set", "archs.cnn.training.epochs=1")
    assert out.returncode == 0 and "does not apply" not in out.stderr


def test_config_prints_filled_defaults():
    out = _run("config")
    assert out.returncode == 0 and "max_alerts_per_source: 100" in out.stdout


def test_ingest_and_split_from_the_command_line(tmp_path):
    out = _run(
        "ingest",
        "-q",
        "--set",
        "data.synthetic.n_sources=80",
        "--out",
        str(tmp_path / "ztf"),
        "--log",
        str(tmp_path / "ingest.log"),
    )
    assert out.returncode == 0, out.stderr
    assert "SYNTHETIC" in out.stdout and (tmp_path / "ingest.log").stat().st_size > 0
    out = _run(
        "split", "--dataset-dir", str(tmp_path / "ztf"), "--fraction", "50", "--out", str(tmp_path / "f50.parquet")
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "f50.parquet").is_file()


def test_metadata_only_model_to_figure3_from_the_command_line(tmp_path):
    out = _run("ingest", "-q", "--set", "data.synthetic.n_sources=80", "--out", str(tmp_path / "ztf"))
    assert out.returncode == 0, out.stderr
    out = _run(
        "split", "--dataset-dir", str(tmp_path / "ztf"), "--fraction", "100", "--out", str(tmp_path / "f.parquet")
    )
    assert out.returncode == 0, out.stderr
    run = tmp_path / "run"
    out = _run(
        "train",
        "-q",
        "--modality",
        "multimodal",
        "--arch",
        "none",
        "--set",
        "training.epochs=1",
        "--dataset-dir",
        str(tmp_path / "ztf"),
        "--split",
        str(tmp_path / "f.parquet"),
        "--out-dir",
        str(run),
    )
    assert out.returncode == 0, out.stderr
    assert "bts_p1 F1" in out.stdout and "prod_p2 F1" in out.stdout and (run / "model.pt").is_file()
    out = _run(
        "f1", str(run / "metrics.json"), "--out", str(tmp_path / "f1.csv"), "--peak-mag-out", str(tmp_path / "peak.csv")
    )
    assert out.returncode == 0, out.stderr
    out = _run(
        "figure3",
        "--table",
        str(tmp_path / "f1.csv"),
        "--policy",
        "prod_p1",
        "bts_p1",
        "--out",
        str(tmp_path / "f3.pdf"),
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "f3.pdf").read_bytes()[:5] == b"%PDF-" and (tmp_path / "peak.csv").is_file()


def test_weights_command_fetches_a_folder_and_explains_a_missing_id(tmp_path):
    import json
    import os

    from test_weights import _write_hub_folder

    _write_hub_folder(tmp_path / "w")
    out = _run(
        "weights",
        "--regimen",
        "imagenet",
        "--arch",
        "convnext",
        "--id",
        f"local-dir:{tmp_path / 'w'}",
        "--out",
        str(tmp_path / "fetched"),
    )
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "fetched" / "source.json").read_text())["architecture"] == "convnext_pico"
    assert (tmp_path / "fetched" / "model.safetensors").is_file()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "alertvision",
            "weights",
            "--regimen",
            "galaxyzoo",
            "--arch",
            "maxvit",
            "--out",
            str(tmp_path / "gz"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 1
    assert "hf_hub:mwalmsley/baseline-encoder-regression-maxvit_tiny" in out.stderr and "local_dirs" in out.stderr
    assert str(tmp_path / "gz") in out.stderr and not (tmp_path / "gz").exists()


def test_ingest_real_packets_from_the_command_line(tmp_path):
    from conftest import packet_paths

    packet_dir = packet_paths()[0].parent
    (tmp_path / "labels.csv").write_text("objectId,label,source_set\nZTF20aajcdad,1,trues\nZTF20aaelulu,0,rejects\n")
    out = _run(
        "ingest",
        "-q",
        "--set",
        "data.source=avro",
        "--set",
        f"data.avro.path={packet_dir}",
        "--set",
        f"data.avro.labels={tmp_path / 'labels.csv'}",
        "--set",
        "grid.datasets=[ztf]",
        "--out",
        str(tmp_path / "ztf"),
    )
    assert out.returncode == 0, out.stderr
    assert "3 alerts of 2 sources (avro)" in out.stdout
    out = _run(
        "ingest", "-q", "--set", "data.source=avro", "--set", "grid.datasets=[ztf]", "--out", str(tmp_path / "x")
    )
    assert out.returncode == 2 and "config key data.avro" in out.stderr


def test_ingest_the_rubin_dataset_from_the_command_line(tmp_path):
    out = _run("ingest-lsst", "-q", "--set", "data.synthetic.n_sources=24", "--out", str(tmp_path / "lsst"))
    assert out.returncode == 0, out.stderr
    assert "Rubin/LSST alerts of" in out.stdout and "(SYNTHETIC)" in out.stdout
    assert (tmp_path / "lsst" / "manifest.json").is_file()
    # real packets without their keys: the ingest names them, whether or not the grid has the lsst dataset
    for datasets in ("[ztf]", "[ztf,lsst]"):
        out = _run(
            "ingest-lsst", "-q", "--set", "data.lsst.source=avro", "--set", f"grid.datasets={datasets}",
            "--out", str(tmp_path / "x"),
        )  # fmt: skip
        assert out.returncode == 2 and "config key data.lsst.avro" in out.stderr, (datasets, out.stderr)
    out = _run("ingest", "-q", "--set", "data.survey=lsst", "--out", str(tmp_path / "y"))
    assert out.returncode == 2 and "add lsst to grid.datasets" in out.stderr


def test_sweep_then_train_from_the_command_line_as_snakemake_does(tmp_path):
    """A swept architecture: `train` stops until `sweep` has written best.yaml, then trains with it; every file
    lands where the Snakemake rules put it (the study plan's paths)."""
    import json

    import yaml

    from alertvision.study.plan import Layout, Run

    config = tmp_path / "study.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"synthetic": {"n_sources": 80}},
                "grid": {"archs": ["cnn"]},
                "archs": {
                    "cnn": {
                        "kind": "cnn",
                        "input_size": 63,
                        "conv1_channels": 4,
                        "conv2_channels": 8,
                        "conv_kernel": 3,
                        "sweep": {"trials": 2, "workers": 1},
                    }
                },
                "training": {"epochs": 1, "batch_size": 16},
            }
        )
    )
    layout, run = Layout(), Run("ztf", "image", "cnn", "none", "100", 0)
    common = ("-q", "--config", str(config))
    assert _run("ingest", *common, cwd=tmp_path).returncode == 0
    out = _run(
        "split",
        *common,
        "--dataset-dir",
        layout.dataset_dir("ztf"),
        "--fraction",
        "100",
        "--out",
        layout.split_file("ztf", "100"),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    out = _run("train", *common, "--arch", "cnn", cwd=tmp_path)
    assert out.returncode == 1 and "alertvision sweep" in out.stderr and "best.yaml" in out.stderr
    out = _run("sweep", *common, "--arch", "cnn", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    best = tmp_path / layout.sweep_dir(run) / "best.yaml"
    assert best.is_file() and (best.parent / "trials.csv").is_file()
    out = _run("train", *common, "--arch", "cnn", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / layout.run_file("metrics.json", run)).read_text())
    assert metrics["hyperparameters_from"] == str(Path(layout.sweep_dir(run)) / "best.yaml")
    assert metrics["hyperparameters"] == yaml.safe_load(best.read_text())["params"]
    out = _run("sweep-summary", str(best), "--out", layout.sweep_summary(), cwd=tmp_path)
    assert out.returncode == 0 and (tmp_path / layout.sweep_summary()).is_file()


def test_a_failed_release_reingest_leaves_the_good_dataset_whole(tmp_path):
    """Before, a re-ingest with a mistyped path or a bad table deleted the good dataset's manifest.json."""
    from test_release import make_release, write_release

    write_release(tmp_path / "release", make_release(4))
    bad = make_release(4)
    bad["val"][0].loc[2, "split"] = "train"
    write_release(tmp_path / "bad", bad)

    def ingest(folder: Path):
        return _run(
            "ingest",
            "-q",
            *("--set", "data.source=release", "--set", f"data.release.path={folder}"),
            *("--set", "grid.datasets=[ztf]", "--out", str(tmp_path / "ztf")),
        )

    out = ingest(tmp_path / "release")
    assert out.returncode == 0, out.stderr
    good = {p.name: p.read_bytes() for p in (tmp_path / "ztf").iterdir()}
    assert set(good) == {"alerts.parquet", "images.npy", "manifest.json"}
    for folder, message in ((tmp_path / "relaese", "is not a folder"), (tmp_path / "bad", "the split column says")):
        out = ingest(folder)
        assert out.returncode == 1 and message in out.stderr, out.stderr
        assert {p.name: p.read_bytes() for p in (tmp_path / "ztf").iterdir()} == good
