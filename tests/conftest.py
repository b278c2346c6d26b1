"""Shared fixtures: the real alert packets, a tiny config, tiny synthetic datasets; the test folders' import path."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# tests/unit: unit tests; tests/workflow: Snakemake and the CLI as a user runs them; tests/servers: the
# local protocol servers and clusters the tests talk to. Servers and unit-test helpers import by name.
sys.path[:0] = [str(REPO / "tests" / "servers"), str(REPO / "tests" / "unit")]
#: Twelve real ZTF packets (MIT, from skyportal/kowalski; see the README and LICENSE beside them).
ALERTS_DIR = REPO / "tests" / "data" / "ztf_alerts"

#: A study small enough for a test: every stage, every architecture, two fractions.
TINY_CONFIG = {
    "data": {"source": "synthetic", "synthetic": {"seed": 3, "n_sources": 200}},
    "legacysurvey": {"source": "synthetic"},
    "splits": {"seed": 2},
    "grid": {
        "datasets": ["ztf", "ls"],
        "modalities": ["image"],
        "archs": ["cnn", "convnext", "maxvit"],
        "regimens": ["none"],
        "fractions": [50, 100],
        "seeds": [0],
    },
    # input_scale 63 as the embedded default: at the paper's scale (1) a few epochs barely move the loss
    "archs": {
        # BTSbot's CNN shape at a fifth of its width: the tests pin behaviour, not the model's capacity
        # (tests/unit/test_models.py counts the parameters of the full-size default)
        "cnn": {
            "kind": "cnn",
            "input_scale": 63,
            "conv1_channels": 8,
            "conv2_channels": 16,
            "conv_kernel": 3,
            "training": {"epochs": 8},
            "sweep": {"trials": 2, "workers": 2},
        },
        "convnext": {"kind": "timm", "timm_name": "convnext_pico", "input_size": 63, "input_scale": 63},
        "maxvit": {
            "kind": "timm",
            "timm_name": "maxvit_tiny_rw_224",
            "input_size": 64,
            "input_scale": 63,
            "training": {"epochs": 1},
        },
    },
    "training": {"epochs": 3, "batch_size": 32, "lr": 0.0003, "warmup_epochs": 0, "patience": 3},
    # Table 2 and Figure 4 at test scale: one short trial, one training step
    "benchmark": {
        "min_alerts": 64,
        "trials": 1,
        "train_steps": 1,
        "train_warmup": 0,
        "production": {"cpu_batch_size": 64},
    },
    "embed": {"umap": {"n_neighbors": 10}},
    # the CNN is swept (archs.cnn.sweep), over rates that learn in a few epochs and widths as narrow as
    # archs.cnn's (the default space's 16-64 and 32-128 channels made the CNN the tiny study's slowest model)
    "sweep": {
        "search_space": {
            "lr": {"type": "categorical", "choices": [0.0003, 0.001]},
            "warmup_epochs": None,
            "batch_size": {"type": "categorical", "choices": [16, 32]},
            "conv1_channels": {"type": "categorical", "choices": [4, 8]},
            "conv2_channels": {"type": "categorical", "choices": [8, 16]},
        }
    },
}


def packet_paths() -> list[Path]:
    """The real packets shipped with the tests (a missing one is a broken checkout, not a skip)."""
    paths = sorted(ALERTS_DIR.glob("*.avro"))
    assert len(paths) == 12, f"expected the 12 real ZTF packets in {ALERTS_DIR}, found {len(paths)}"
    return paths


@pytest.fixture(scope="session")
def packets() -> list[dict]:
    """The twelve real ZTF alert packets, as fastavro reads them."""
    import fastavro

    out = []
    for path in packet_paths():
        with open(path, "rb") as fh:
            out.extend(fastavro.reader(fh))
    return out


@pytest.fixture
def tiny_config() -> dict:
    from alertvision.config import validate_config

    return dict(validate_config(copy.deepcopy(TINY_CONFIG)))


@pytest.fixture(scope="session")
def tiny_datasets(tmp_path_factory) -> dict[str, Path]:
    """The tiny config's ZTF and LS datasets, built once per session."""
    from alertvision.config import validate_config
    from alertvision.data.sources import ingest_ls, ingest_ztf

    config = validate_config(copy.deepcopy(TINY_CONFIG))
    root = tmp_path_factory.mktemp("data")
    ingest_ztf(config, root / "ztf", progress=False)
    ingest_ls(config, root / "ztf", root / "ls", progress=False)
    return {"ztf": root / "ztf", "ls": root / "ls", "config": config}


@pytest.fixture(scope="session")
def split_file(tiny_datasets, tmp_path_factory) -> Path:
    """The split table of the tiny ZTF dataset at 100% of the training sources."""
    from alertvision.atomic import write_parquet
    from alertvision.data.contract import open_dataset
    from alertvision.data.splits import split_table

    alerts = open_dataset(tiny_datasets["ztf"]).alerts
    path = tmp_path_factory.mktemp("splits") / "f100.parquet"
    write_parquet(path, split_table(alerts, 100, tiny_datasets["config"]["splits"]))
    return path


@pytest.fixture(scope="session")
def quick_split_file(tiny_datasets, tmp_path_factory) -> Path:
    """10% of the tiny ZTF dataset's training sources (a quick epoch) and its whole val and test splits."""
    from alertvision.atomic import write_parquet
    from alertvision.data.contract import open_dataset
    from alertvision.data.splits import split_table

    path = tmp_path_factory.mktemp("splits") / "f10.parquet"
    write_parquet(path, split_table(open_dataset(tiny_datasets["ztf"]).alerts, 10, tiny_datasets["config"]["splits"]))
    return path


def quick_run(tiny_datasets: dict, split: Path, out: Path, arch: str, modality: str) -> Path:
    """Train ``arch`` (``modality``) for one epoch on ``split`` into ``out`` (median metadata fill)."""
    from alertvision.study.jobs import TrainJob, model_spec, training_params
    from alertvision.training.loop import train_run

    config = tiny_datasets["config"]
    if modality == "multimodal":
        config = {**config, "multimodal": {**config["multimodal"], "metadata_fill": "median"}}
    training = {**training_params(config, arch, modality), "epochs": 1, "patience": 1}
    info = {"arch": arch, "modality": modality, "regimen": "none", "fraction": "100", "seed": 0, "dataset": "ztf"}
    job = TrainJob.local(
        tiny_datasets["ztf"], split, out, model=model_spec(config, arch, modality), training=training, seed=0, info=info
    )
    train_run(job, progress=False)
    return out


def dry_run_jobs(dry_run_output: str) -> dict[str, int]:
    """Jobs per rule a Snakemake dry run would execute (from its job-stats table)."""
    counts: dict[str, int] = {}
    in_table = False
    for line in dry_run_output.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if not parts or parts[0] == "total":
                break
            if not parts[0].startswith("-"):
                counts[parts[0]] = int(parts[1])
    return counts


@pytest.fixture
def mounted_tmpfs(tmp_path):
    """``mount(name, size, readonly=False)``: a small tmpfs under tmp_path (a full or read-only disk for real);
    skips, saying why, where this process may not mount (not root, no CAP_SYS_ADMIN)."""
    import subprocess

    mounted: list[Path] = []

    def mount(name: str, size: str = "256k", readonly: bool = False) -> Path:
        point = tmp_path / name
        point.mkdir()
        options = f"size={size}" + (",ro" if readonly else "")
        out = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True, text=True
        )
        if out.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({out.stderr.strip() or out.returncode}): needs root")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)
