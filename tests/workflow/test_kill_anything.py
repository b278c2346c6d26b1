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
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"), "--cores", "2"]
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


def _name(job: psutil.Process) -> str:
    """What a job runs, for the test's record; it may end at any moment, even while it is read."""
    try:
        return " ".join(job.cmdline()[-2:])
    except psutil.NoSuchProcess:
        return "a job that just ended"


def _with_children(job: psutil.Process) -> list[psutil.Process]:
    """A job and what it started, as far as they are still there (it may end while they are listed)."""
    try:
        return [job, *job.children(recursive=True)]
    except psutil.NoSuchProcess:
        return [job]


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
            kills.append(_name(victim))
            for p in _with_children(victim):
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


CHILD = """
import json, sys
from alertvision.config import validate_config
from alertvision.data.sources import ingest_ls, ingest_ztf
args = json.loads(sys.argv[1])
if args["step"] == "imports":
    sys.exit(0)
config = validate_config(args["config"])
if args["step"] == "ztf":
    ingest_ztf(config, args["out"], progress=False)
else:
    ingest_ls(config, args["ztf"], args["out"], progress=False)
"""


def _run_whole(args: dict) -> float:
    """Run the step to the end; its seconds (Python's start-up included)."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], check=True)
    return time.monotonic() - started


def _kill_while_running(args: dict, rng: random.Random, seconds: float, times: int = 5) -> int:
    """Start the step, SIGKILL it at a random moment past its imports, ``times`` times (fewer if it
    finishes first), then let it finish; how many kills landed. ``seconds``: a whole run's time; each
    kill lands within a ``times``-th of its work, as a step that keeps its progress (a cache) gets
    shorter with every rerun."""
    startup = _run_whole({"step": "imports"})
    work = max(seconds - startup, 0.5) / times
    landed = 0
    for _ in range(times):
        child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], start_new_session=True)
        time.sleep(startup + rng.uniform(0.2, 0.9) * work)
        if child.poll() is not None:
            break
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        landed += 1
    subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], check=True)
    return landed


def _same_dataset(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(pd.read_parquet(a / "alerts.parquet"), pd.read_parquet(b / "alerts.parquet"))
    assert np.array_equal(np.load(a / "images.npy", mmap_mode="r"), np.load(b / "images.npy", mmap_mode="r"))
    left = [p.name for p in b.iterdir() if p.name.startswith(".")]
    assert left == [], f"temporaries left in {b}: {left}"


def test_an_avro_ingest_killed_at_random_moments_writes_the_same_dataset(tmp_path, packets):
    import io

    import fastavro
    from conftest import packet_paths

    with open(packet_paths()[0], "rb") as fh:
        schema = fastavro.reader(fh).writer_schema
    folder = tmp_path / "packets"
    folder.mkdir()
    ids = []
    for i in range(600):  # 50 re-serialised copies of each real packet, each its own alert
        packet = packets[i % len(packets)]
        candid = packet["candid"] + 1000 + i
        variant = {
            **packet,
            "objectId": f"ZTF99kill{i // 3:04d}",
            "candid": candid,
            "candidate": {**packet["candidate"], "candid": candid, "jd": packet["candidate"]["jd"] + i * 1e-3},
        }
        ids.append(variant["objectId"])
        buf = io.BytesIO()
        fastavro.writer(buf, schema, [variant], sync_marker=bytes([i % 256]) * 16)
        (folder / f"{i:04d}.avro").write_bytes(buf.getvalue())
    ids = sorted(set(ids))
    labels = pd.DataFrame(
        {
            "objectId": ids,
            "label": [i % 2 for i in range(len(ids))],
            "source_set": ["trues", "rejects"] * (len(ids) // 2),
        }
    )
    labels.to_csv(tmp_path / "labels.csv", index=False)
    config = {
        "data": {"source": "avro", "avro": {"path": str(folder), "labels": str(tmp_path / "labels.csv")}},
        "grid": {"datasets": ["ztf"]},
    }
    whole = {"step": "ztf", "config": config, "out": str(tmp_path / "whole")}
    seconds = _run_whole(whole)
    killed = {**whole, "out": str(tmp_path / "killed")}
    landed = _kill_while_running(killed, random.Random(3), seconds)
    assert landed >= 3, f"only {landed} kills landed: make the ingest longer"
    _same_dataset(tmp_path / "whole", tmp_path / "killed")


def test_a_legacy_survey_fetch_killed_at_random_moments_loses_and_duplicates_no_cache_entry(tmp_path, tiny_datasets):
    from astropy.io import fits
    from legacysurvey_server import ViewerServer

    with ViewerServer(latency_s=0.05) as server:

        def config(cache: Path) -> dict:
            viewer = {"url": server.url, "cache_dir": str(cache), "backoff_s": 0.0, "concurrency": 2}
            return {**copy.deepcopy(TINY_CONFIG), "legacysurvey": {"source": "viewer", "viewer": viewer}}

        ztf = str(tiny_datasets["ztf"])
        whole = {"step": "ls", "config": config(tmp_path / "cache-whole"), "ztf": ztf, "out": str(tmp_path / "whole")}
        seconds = _run_whole(whole)
        asked_whole = sum(server.counts.values())
        killed = {**whole, "config": config(tmp_path / "cache-killed"), "out": str(tmp_path / "killed")}
        landed = _kill_while_running(killed, random.Random(5), seconds)
        assert landed >= 3, f"only {landed} kills landed: make the fetch longer"
    _same_dataset(tmp_path / "whole", tmp_path / "killed")

    def entries(cache: Path) -> set[Path]:
        """Cache entries; a kill may leave a hidden temporary (.*.tmp), never read, removed when old."""
        files = [p for p in cache.rglob("*") if p.is_file()]
        assert all(p.name.endswith(".tmp") for p in files if p.name.startswith(".")), files
        return {p.relative_to(cache) for p in files if not p.name.startswith(".")}

    cached, again = entries(tmp_path / "cache-whole"), entries(tmp_path / "cache-killed")
    assert again == cached, f"cache entries differ: {sorted(map(str, again ^ cached))[:10]}"
    for name in cached:
        assert (tmp_path / "cache-killed" / name).read_bytes() == (tmp_path / "cache-whole" / name).read_bytes()
        if name.suffix == ".fits":
            fits.open(tmp_path / "cache-killed" / name).close()
    # at most the requests in flight at each kill were asked again
    assert sum(server.counts.values()) - asked_whole <= asked_whole + landed * 2
