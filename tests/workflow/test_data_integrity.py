"""Nothing stale, nothing leaked: the ingest reruns on any change of its input files, a sweep's storage
password stays out of Snakemake's records, and the CLI resolves a config as Snakemake does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import dry_run_jobs, packet_paths
from postgres_server import postgres_url  # noqa: F401 (the fixture)

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")]


def snakemake(workdir: Path, *args: str) -> str:
    out = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True)
    assert out.returncode == 0, f"snakemake {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def planned(workdir: Path, target: str = "results/data/ztf/manifest.json") -> set[str]:
    return set(dry_run_jobs(snakemake(workdir, "-n", target)))


def _edit_packet(path: Path) -> None:
    """Rewrite an Avro packet in place with its magnitude changed (a newer file with other bytes)."""
    import fastavro

    with open(path, "rb") as fh:
        reader = fastavro.reader(fh)
        schema, records = reader.writer_schema, list(reader)
    records[0]["candidate"]["magpsf"] += 0.01
    with open(path, "wb") as fh:
        fastavro.writer(fh, schema, records)


def _avro_study(tmp_path: Path, paths: list[Path]) -> None:
    """A study in ``tmp_path`` of the ``avro`` source on ``packets/``, every source of ``paths`` labelled."""
    import fastavro

    ids = sorted({next(iter(fastavro.reader(open(p, "rb"))))["objectId"] for p in paths})
    (tmp_path / "labels.csv").write_text(
        "objectId,label,source_set\n"
        + "".join(f"{o},{i % 2},{'trues' if i % 2 else 'rejects'}\n" for i, o in enumerate(ids))
    )
    config = {
        "data": {"source": "avro", "avro": {"path": "packets", "labels": "labels.csv", "dims_peak_limit": None}},
        "splits": {"probabilities": [0.5, 0.25, 0.25]},
        "grid": {"datasets": ["ztf"]},
    }
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))


def test_any_added_removed_or_edited_packet_reruns_the_ingest(tmp_path):
    """Before, the folder was the input: editing a packet, adding one in a subfolder or removing one reran nothing."""
    packets = tmp_path / "packets"
    (packets / "night1").mkdir(parents=True)
    paths = packet_paths()
    for path in paths[:-1]:
        shutil.copy(path, packets / "night1" / path.name)
    _avro_study(tmp_path, paths)
    snakemake(tmp_path, "--cores", "1", "results/data/ztf/manifest.json")
    manifest = tmp_path / "results" / "data" / "ztf" / "manifest.json"
    assert yaml.safe_load(manifest.read_text())["n_alerts"] == 11
    assert planned(tmp_path) == set()

    # a packet added in a new subfolder
    (packets / "night2").mkdir()
    shutil.copy(paths[-1], packets / "night2" / paths[-1].name)
    assert planned(tmp_path) == {"ingest_ztf"}
    snakemake(tmp_path, "--cores", "1", "results/data/ztf/manifest.json")
    assert yaml.safe_load(manifest.read_text())["n_alerts"] == 12 and planned(tmp_path) == set()

    # a packet edited in place
    time.sleep(1)
    _edit_packet(packets / "night1" / paths[0].name)
    assert planned(tmp_path) == {"ingest_ztf"}
    snakemake(tmp_path, "--cores", "1", "results/data/ztf/manifest.json")
    assert planned(tmp_path) == set()

    # a packet removed
    (packets / "night1" / paths[1].name).unlink()
    assert planned(tmp_path) == {"ingest_ztf"}
    snakemake(tmp_path, "--cores", "1", "results/data/ztf/manifest.json")
    assert yaml.safe_load(manifest.read_text())["n_alerts"] == 11


def test_rubin_packets_added_rerun_the_lsst_ingest_only(tmp_path):
    """The lsst dataset's packets and labels (data.lsst.avro) are fingerprinted inputs of ingest_lsst alone."""
    import fastavro

    real = REPO / "tests" / "data" / "lsst_alerts" / "part-2-918301.avro"
    (tmp_path / "packets").mkdir()
    shutil.copy(real, tmp_path / "packets" / real.name)
    ids = sorted({r["diaSource"]["diaObjectId"] for r in fastavro.reader(open(real, "rb"))} - {0, None})
    (tmp_path / "labels.csv").write_text(
        "diaObjectId,label,source_set\n" + "".join(f"{o},{i % 2},all\n" for i, o in enumerate(ids))
    )
    config = {
        "data": {
            "synthetic": {"n_sources": 16, "seed": 3},
            "lsst": {"source": "avro", "avro": {"path": "packets", "labels": "labels.csv"}},
        },
        "splits": {"probabilities": [0.5, 0.25, 0.25]},
        "grid": {"datasets": ["ztf", "lsst"]},
    }
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    targets = ("results/data/ztf/manifest.json", "results/data/lsst/manifest.json")
    snakemake(tmp_path, "--cores", "1", *targets)
    assert (tmp_path / "results" / "data" / "lsst.inputs.tsv").is_file()
    assert not (tmp_path / "results" / "data" / "ztf.inputs.tsv").exists()  # synthetic ZTF alerts: no files
    assert set(dry_run_jobs(snakemake(tmp_path, "-n", *targets))) == set()
    shutil.copy(real, tmp_path / "packets" / "again.avro")  # the same alerts again: counted as duplicates
    assert set(dry_run_jobs(snakemake(tmp_path, "-n", *targets))) == {"ingest_lsst"}


def test_a_packet_replaced_by_one_with_an_older_mtime_reruns_the_ingest(tmp_path):
    """Before, `cp -p` (or `rsync -a`, `tar x`) of another packet with an older modification time over one
    of the ingest's packets gave "Nothing to be done": only timestamps were compared."""
    packets = tmp_path / "packets"
    packets.mkdir()
    paths = packet_paths()
    for path in paths[:4]:
        shutil.copy(path, packets / path.name)
    _avro_study(tmp_path, paths)
    snakemake(tmp_path, "--cores", "1", "results/data/ztf/manifest.json")
    manifest = tmp_path / "results" / "data" / "ztf" / "manifest.json"
    alerts = yaml.safe_load(manifest.read_text())["n_alerts"]
    assert planned(tmp_path) == set()
    # another version of the first packet (other bytes), dated a day back, copied over it as `cp -p` does
    older = tmp_path / "older.avro"
    shutil.copy(packets / paths[0].name, older)
    _edit_packet(older)
    day_ago = time.time() - 86400
    os.utime(older, (day_ago, day_ago))
    shutil.copy2(older, packets / paths[0].name)
    assert (packets / paths[0].name).stat().st_mtime < manifest.stat().st_mtime
    assert planned(tmp_path) == {"ingest_ztf"}
    snakemake(tmp_path, "--cores", "1", "results/data/ztf/manifest.json")
    assert planned(tmp_path) == set() and yaml.safe_load(manifest.read_text())["n_alerts"] == alerts
    # a file only touched, or copied over with its own bytes, reruns nothing
    os.utime(packets / paths[1].name, (day_ago, day_ago))
    shutil.copy2(paths[2], packets / paths[2].name)
    assert planned(tmp_path) == set()


def test_a_release_table_edited_in_place_reruns_the_ingest(tmp_path):
    from test_release import make_release, write_release

    write_release(tmp_path / "release", make_release(3))
    config = {"data": {"source": "release", "release": {"path": "release"}}, "grid": {"datasets": ["ztf"]}}
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(tmp_path, "--cores", "1", "results/data/ztf/manifest.json")
    assert planned(tmp_path) == set()
    time.sleep(1)
    table = tmp_path / "release" / "val_cand_v10_N100_programid1.csv"
    table.write_text(table.read_text().replace(",t,", ",f,", 1))  # one alert's isdiffpos edited
    assert planned(tmp_path) == {"ingest_ztf"}


def test_the_cli_resolves_a_config_file_as_snakemake_does(tmp_path):
    """Before, the CLI read only the file it was given while Snakemake merged it over config/config.yaml."""
    partial = tmp_path / "partial.yaml"
    partial.write_text(
        yaml.safe_dump(
            {
                "training": {"epochs": 2},
                "grid": {"archs": ["cnn"], "datasets": ["ztf"], "modalities": ["image"]},
                "benchmark": {"enabled": False},
                "embed": {"enabled": False},
            }
        )
    )
    work = tmp_path / "work"
    shutil.copytree(REPO / "config", work / "config")  # the embedded default a run from the repository sees
    snakemake(work, "--cores", "1", "results/config.yaml", "--configfile", str(partial))
    seen_by_snakemake = yaml.safe_load((work / "results" / "config.yaml").read_text())
    cli = subprocess.run(
        [sys.executable, "-m", "alertvision", "config", "--config", str(partial)],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    )
    assert yaml.safe_load(cli.stdout) == seen_by_snakemake
    # the file replaced the embedded default (its 450 synthetic sources, its input_scale 63): schema defaults
    assert seen_by_snakemake["data"]["synthetic"]["n_sources"] == 560
    assert seen_by_snakemake["archs"]["cnn"]["input_scale"] == 1.0 and seen_by_snakemake["training"]["epochs"] == 2
    # and with no file, both read config/config.yaml
    snakemake(work, "--cores", "1", "results/config.yaml", "--forceall")
    cli = subprocess.run(
        [sys.executable, "-m", "alertvision", "config"], cwd=work, capture_output=True, text=True, check=True
    )
    default = yaml.safe_load((work / "results" / "config.yaml").read_text())
    assert yaml.safe_load(cli.stdout) == default and default["data"]["synthetic"]["n_sources"] == 450


def test_snakemake_refuses_a_key_given_twice_and_names_a_shadowed_config_value(tmp_path):
    """Before, Snakemake's loader kept the last of two `epochs` (the file's value lost, in config/config.yaml
    and a --configfile alike) and `--config training="{epochs: 1}"` silently missed the CNN."""
    (tmp_path / "config").mkdir()
    embedded = tmp_path / "config" / "config.yaml"
    embedded.write_text("grid:\n  archs: [cnn]\ntraining:\n  epochs: 2\n  epochs: 6\n")

    def dry_run(*args: str, ok: bool = True) -> str:
        out = subprocess.run(
            [*SNAKEMAKE, "--directory", str(tmp_path), "-n", "results/config.yaml", *args],
            capture_output=True,
            text=True,
        )
        assert (out.returncode == 0) == ok, out.stdout[-3000:] + out.stderr[-3000:]
        return out.stdout + out.stderr

    said = dry_run(ok=False)
    assert "config file config/config.yaml, line 5: key 'epochs' is given twice (first on line 4)" in said
    study = tmp_path / "study.yaml"
    study.write_text("data:\n  source: synthetic\ndata:\n  synthetic: {seed: 4}\n")
    said = dry_run("--configfile", str(study), ok=False)
    assert f"config file {study}, line 3: key 'data' is given twice (first on line 1)" in said
    embedded.write_text("grid:\n  archs: [cnn]\narchs:\n  cnn: {kind: cnn, training: {epochs: 8}}\n")
    said = dry_run("--config", "training={epochs: 1}")
    assert "--config training.epochs=1 does not apply to the cnn runs: archs.cnn.training.epochs=8 overrides it" in said
    assert "does not apply" not in dry_run("--config", "training={batch_size: 16}")


def test_a_storage_password_never_reaches_snakemake_records_logs_or_results(tmp_path, postgres_url):  # noqa: F811
    """Before, sweep.storage was a rule param, stored in plain text in .snakemake/metadata, and a URL given
    with --config showed up in Snakemake's own log: the URL now comes from the environment only."""
    password = postgres_url.split(":")[2].split("@")[0]
    assert password and password in postgres_url
    config = {
        "data": {"synthetic": {"n_sources": 60, "seed": 3}},
        "grid": {"datasets": ["ztf"], "archs": ["cnn"], "modalities": ["image"], "fractions": [100]},
        "archs": {"cnn": {"kind": "cnn", "input_scale": 63, "training": {"epochs": 1}}},
        "sweep": {
            "trials": 1,
            "study_prefix": f"secret{os.getpid()}",
            "search_space": {"lr": {"type": "categorical", "choices": [0.001]}},
        },
        "benchmark": {"enabled": False},
        "embed": {"enabled": False},
    }
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    targets = ["results/sweeps/ztf/image/cnn/none/f100/best.yaml", "results/config.yaml"]
    # the URL on the command line is refused before anything runs, naming the variable, not the password
    # (its Snakemake log is scanned below with the rest)
    out = subprocess.run(
        [
            *SNAKEMAKE,
            "--directory",
            str(tmp_path),
            "--cores",
            "1",
            *targets,
            "--config",
            f"sweep={{storage: {postgres_url}}}",
        ],
        capture_output=True,
        text=True,
    )
    said = out.stdout + out.stderr
    assert out.returncode != 0 and "config key sweep.storage: the URL holds a password" in said
    assert "environment variable ALERTVISION_SWEEP_STORAGE" in said and password not in said
    env = {**os.environ, "ALERTVISION_SWEEP_STORAGE": postgres_url}
    out = subprocess.run(
        [*SNAKEMAKE, "--directory", str(tmp_path), "--cores", "1", *targets], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "results/sweeps/ztf/image/cnn/none/f100/best.yaml").read_text())
    assert best["n_trials"] == 1 and best["storage"].startswith("postgresql") and "***" in best["storage"]
    scanned = 0
    for folder in (".snakemake", "logs", "results"):
        for path in (tmp_path / folder).rglob("*"):
            if path.is_file():
                scanned += 1
                assert password.encode() not in path.read_bytes(), path
    assert scanned > 10


# --------------------------------------------------------------------------- disks, folders, leftovers


def test_a_full_disk_names_the_path_and_leaves_no_partial_file(mounted_tmpfs):
    """Before, a full disk surfaced as torch's 'PytorchStreamWriter failed writing file' or a bare ENOSPC."""
    import numpy as np

    from alertvision.atomic import DiskFullError, write_text
    from alertvision.models import build_model, save_model

    disk = mounted_tmpfs("full", size="256k")
    with pytest.raises(DiskFullError, match=f"the disk is full: could not write {disk / 'big.txt'}"):
        write_text(disk / "big.txt", "x" * 400_000)
    head = {"dense1": 8, "dense2": None, "dropout": 0.2}
    arch = {
        "kind": "cnn",
        "input_size": 63,
        "conv1_channels": 32,
        "conv2_channels": 64,
        "conv_kernel": 5,
        "conv_dropout1": 0.5,
        "conv_dropout2": 0.55,
    }
    model = build_model(arch, head)  # 206,897 float32 parameters: about 830 kB
    with pytest.raises(DiskFullError, match=f"could not write {disk / 'model.pt'}") as err:
        save_model(model, disk / "model.pt", spec=arch, head_cfg=head, info={})
    assert "bytes free" in str(err.value)
    assert sorted(p.name for p in disk.iterdir()) == []  # nothing partial, under any name
    from alertvision.data.contract import ImageArrayWriter

    with pytest.raises(DiskFullError, match="images.npy"):
        with ImageArrayWriter(disk / "images.npy") as writer:
            for _ in range(20):
                writer.append(np.zeros((4, 3, 63, 63), np.float32))
    assert sorted(p.name for p in disk.iterdir()) == []


def test_an_unwritable_run_folder_stops_before_training(mounted_tmpfs, tiny_datasets, split_file, caplog):
    from alertvision.study.jobs import TrainJob, training_params
    from alertvision.training.loop import train_run

    readonly = mounted_tmpfs("ro", readonly=True)
    config = tiny_datasets["config"]
    with caplog.at_level("INFO"), pytest.raises(PermissionError, match=f"cannot write the run's outputs to {readonly}"):
        job = TrainJob.local(
            tiny_datasets["ztf"],
            split_file,
            readonly,
            model=config["archs"]["cnn"],
            training=training_params(config, "cnn"),
            seed=0,
        )
        train_run(job, progress=False)
    assert "epoch 1" not in caplog.text and "training" not in caplog.text  # not one step was taken


def test_a_read_only_dataset_folder_or_cutout_cache_stops_at_once_naming_it(mounted_tmpfs, tiny_datasets):
    """Before, an ingest or a fetch into a read-only folder died with a bare OSError from deep inside."""
    import copy

    from conftest import TINY_CONFIG
    from legacysurvey_server import ViewerServer

    from alertvision.config import validate_config
    from alertvision.data.sources import ingest_ls, ingest_ztf

    readonly = mounted_tmpfs("ro", readonly=True)
    with pytest.raises(PermissionError, match=f"cannot write the dataset to {readonly / 'ztf'}: Read-only"):
        ingest_ztf(tiny_datasets["config"], readonly / "ztf", progress=False)
    writable = mounted_tmpfs("rw", size="64m")
    with ViewerServer() as server:
        config = copy.deepcopy(TINY_CONFIG)
        viewer = {"url": server.url, "cache_dir": str(readonly / "cache"), "backoff_s": 0.0}
        config["legacysurvey"] = {"source": "viewer", "viewer": viewer}
        with pytest.raises(PermissionError, match=f"cannot write Legacy Survey cutouts .* to {readonly / 'cache'}"):
            ingest_ls(validate_config(config), tiny_datasets["ztf"], writable / "ls", progress=False)
        with pytest.raises(PermissionError, match=f"cannot write the Legacy Survey dataset to {readonly / 'ls'}"):
            ingest_ls(validate_config(config), tiny_datasets["ztf"], readonly / "ls", progress=False)
        assert sum(server.counts.values()) == 0  # nothing asked of the service
    assert sorted(p.name for p in writable.iterdir()) == ["ls"] and list((writable / "ls").iterdir()) == []


def test_a_shared_cache_loses_only_temporaries_old_enough_to_be_a_killed_writer_s(tmp_path):
    """A fetch killed mid-write leaves a hidden .<cutout>.*.tmp in the cache, which several jobs may
    share: the next fetch removes those older than ten minutes and leaves a live writer's alone."""
    import os
    import time

    from alertvision.atomic import clean_old_temporaries

    folder = tmp_path / "cache" / "ls-dr10"
    folder.mkdir(parents=True)
    old, fresh, entry = folder / ".ZTF1.fits.ab12.fits.tmp", folder / ".ZTF2.fits.cd34.fits.tmp", folder / "ZTF3.fits"
    for path in (old, fresh, entry):
        path.write_bytes(b"x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    os.utime(entry, (time.time() - 3600, time.time() - 3600))
    assert clean_old_temporaries(tmp_path / "cache") == 1
    assert not old.exists() and fresh.exists() and entry.exists()
    assert clean_old_temporaries(tmp_path / "missing") == 0


def test_a_killed_writer_s_temporary_is_cleaned_when_the_job_starts(tmp_path, tiny_datasets):
    """Before, a killed ingest left a hidden .images.npy.*.tmp the size of the dataset that nothing removed."""
    from types import SimpleNamespace

    from alertvision.atomic import temporaries
    from alertvision.data.contract import building_dataset
    from alertvision.logs import start_job

    folder = tmp_path / "ztf"
    folder.mkdir()
    stale = [folder / ".images.npy.k3j9x.npy.tmp", folder / ".alerts.parquet.a1b2.parquet.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    (folder / ".build.x7.tmp").mkdir()  # a killed build's folder
    (folder / ".build.x7.tmp" / "images.npy").write_bytes(b"\0" * 1000)
    stale.append(folder / ".build.x7.tmp")
    keep = folder / ".other.npy.zz.tmp"  # not a temporary of the dataset's files
    keep.write_bytes(b"x")
    with pytest.raises(RuntimeError, match="stopped"), building_dataset(folder):
        raise RuntimeError("stopped")
    assert not any(p.exists() for p in stale) and keep.exists()
    assert sorted(p.name for p in folder.iterdir()) == [keep.name]  # the aborted build left nothing
    # a Snakemake job: its outputs' temporaries go when it starts (a folder output's too)
    out = tmp_path / "results" / "table.csv"
    out.parent.mkdir()
    (out.parent / ".table.csv.q8.csv.tmp").write_text("partial")
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources" / ".convnext.w1.tmp").mkdir()
    job = SimpleNamespace(
        log=[str(tmp_path / "logs" / "job.log")], output=[str(out), str(tmp_path / "resources" / "convnext")]
    )
    start_job(job)
    assert temporaries(out) == [] and temporaries(tmp_path / "resources" / "convnext") == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_take_the_umask(tmp_path, umask, mode):
    """Before, every atomically written file was 0600 (mkstemp's mode, kept by the rename)."""
    from alertvision.atomic import atomic_dir, write_text

    old = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == mode
    assert (tmp_path / "folder").stat().st_mode & 0o777 == mode | 0o111 & ~umask


# --------------------------------------------------------------------------- bad data, stopped early


def test_a_labels_table_may_not_overwrite_alert_fields(tmp_path, packets):
    """Before, labels columns magpsf, ra, dec, sgscore1 silently replaced every alert's values (exit code 0)."""
    from test_avro import _config

    from alertvision.data.ingest.avro import ingest_avro
    from alertvision.data.ingest.labels import LabelsError

    ids = sorted({p["objectId"] for p in packets})
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "objectId,label,source_set,magpsf,ra,dec,sgscore1,comment\n"
        + "".join(f"{o},{i % 2},{'trues' if i % 2 else 'rejects'},12.0,1.0,2.0,0.5,ok\n" for i, o in enumerate(ids))
    )
    with pytest.raises(LabelsError, match="column\\(s\\) magpsf, ra, dec, sgscore1 would overwrite"):
        ingest_avro(_config(str(packet_paths()[0].parent), labels), tmp_path / "ztf", progress=False)
    assert not (tmp_path / "ztf" / "manifest.json").exists()
    # other columns ride along, as documented
    labels.write_text(
        "objectId,label,source_set,comment\n"
        + "".join(f"{o},{i % 2},{'trues' if i % 2 else 'rejects'},note{i}\n" for i, o in enumerate(ids))
    )
    manifest = ingest_avro(_config(str(packet_paths()[0].parent), labels), tmp_path / "ztf", progress=False)
    assert manifest["n_alerts"] >= 10


def test_an_empty_object_id_is_named_before_any_packet_is_read(tmp_path, monkeypatch):
    from test_avro import _config

    from alertvision.data.ingest import avro
    from alertvision.data.ingest.labels import LabelsError

    labels = tmp_path / "labels.csv"
    labels.write_text("objectId,label,source_set\nZTF20aaelulu,1,trues\n,0,rejects\n   ,0,rejects\n")
    read = []
    monkeypatch.setattr(avro, "iter_packets", lambda files: read.append(files) or iter(()))
    with pytest.raises(LabelsError, match=r"2 row\(s\) without an objectId \(line\(s\) 3, 4 of the table"):
        avro.ingest_avro(_config(str(packet_paths()[0].parent), labels), tmp_path / "ztf", progress=False)
    assert read == []


def test_labels_varying_within_a_source_stop_the_import_naming_it(tmp_path):
    """Before, a release source with alerts of both labels imported fine and broke only the policies later."""
    from test_release import config_for, make_release, write_release

    from alertvision.data.contract import ContractError
    from alertvision.data.ingest.release import ingest_release

    release = make_release(4)
    df, _ = release["train"]
    oid = df.loc[0, "objectId"]
    assert (df["objectId"] == oid).sum() >= 2
    rows = df.index[df["objectId"] == oid]
    df.loc[rows[0], "label"] = 1 - df.loc[rows[1], "label"]
    write_release(tmp_path / "rel", release)
    with pytest.raises(ContractError, match=f"the label varies within 1 source\\(s\\), e.g. {oid}"):
        ingest_release(config_for(tmp_path / "rel"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "images.npy").exists()  # stopped before the images streamed


def test_a_single_class_evaluation_split_is_an_error_not_a_null_auc(tmp_path, tiny_datasets):
    """Before, a test split of one class trained to the end and wrote test_roc_auc: null with exit code 0."""
    import pandas as pd

    from alertvision.atomic import write_parquet
    from alertvision.data.contract import open_dataset
    from alertvision.data.splits import SplitError
    from alertvision.study.steps import split

    data = open_dataset(tiny_datasets["ztf"])
    alerts = data.alerts.copy()
    alerts.loc[alerts["split"] == "test", "label"] = 0
    folder = tmp_path / "ztf"
    folder.mkdir()
    write_parquet(folder / "alerts.parquet", alerts)
    with pytest.raises(SplitError, match=r"the test split holds \d+ alert\(s\), all of label 0"):
        split(folder, 100, tiny_datasets["config"]["splits"], tmp_path / "f100.parquet")
    assert not (tmp_path / "f100.parquet").exists()
    assert isinstance(pd.read_parquet(folder / "alerts.parquet"), pd.DataFrame)
