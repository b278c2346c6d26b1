"""The BTSbot release ingester: small release-format folders written here, extracted and zipped."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alertvision.config import validate_config
from alertvision.data.contract import REQUIRED_COLUMNS, SPLITS, ContractError, open_dataset
from alertvision.data.features import METADATA_FEATURES
from alertvision.data.ingest.release import CANDIDATE_HEADER as CAND_COLUMNS
from alertvision.data.ingest.release import RELEASE_COLUMNS, ReleaseError, ingest_release

TAG = "v10_N100_programid1"
SIZES = {"train": 31, "val": 13, "test": 17}


def make_split(split: str, n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """One split of a small release: its candidate table and float64 NHWC triplets (normalised per cutout)."""
    n_sources = max(1, n // 4)
    object_ids = np.array([f"ZTF{split[:2]}{i:05d}" for i in rng.integers(0, n_sources, n)])
    df = pd.DataFrame({c: rng.normal(size=n) for c in CAND_COLUMNS + RELEASE_COLUMNS})
    df["objectId"] = object_ids
    df["jd"] = 2459000.5 + np.round(rng.uniform(0, 300, n), 5)
    df["fid"] = rng.integers(1, 3, n)
    per_source = {oid: int(rng.uniform() < 0.4) for oid in sorted(set(object_ids))}  # a source has one label
    df["label"] = [per_source[oid] for oid in object_ids]
    df["candid"] = [float(f"{x:.5e}") for x in rng.integers(2 * 10**18, 29 * 10**17, n)]
    df["isdiffpos"] = "t"
    df["source_set"] = rng.choice(["trues", "dims", "vars", "rejects"], n)
    df["split"] = split
    df["is_SN"] = rng.uniform(size=n) < 0.5
    df["programid"] = 1
    triplets = rng.normal(size=(n, 63, 63, 3))
    triplets /= np.linalg.norm(triplets, axis=(1, 2), keepdims=True)
    return df, triplets


def make_release(seed: int = 0) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {split: make_split(split, n, rng) for split, n in SIZES.items()}


def write_release(folder: Path, release: dict, zipped: bool = False, prefix: str = "") -> Path:
    """Write ``release`` in the release's layout: extracted files, or images_v10.zip and metadata_v10.zip."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, (df, triplets) in release.items():
        npy, csv = folder / f"{split}_triplets_{TAG}.npy", folder / f"{split}_cand_{TAG}.csv"
        np.save(npy, triplets)
        df.to_csv(csv, index=False)
        files[split] = (npy, csv)
    if zipped:
        for kind, index in (("images", 0), ("metadata", 1)):
            with zipfile.ZipFile(folder / f"{kind}_v10.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for pair in files.values():
                    zf.write(pair[index], prefix + pair[index].name)
                    pair[index].unlink()
    return folder


def config_for(folder: Path | None, **release) -> dict:
    """A validated config reading the release at ``folder``; with no folder, ``path`` is unset after validation
    (the config check wants a path or both zips, but the ingester is also called directly)."""
    data = {"source": "release", "release": {"path": "unset" if folder is None else str(folder), **release}}
    config = dict(validate_config(copy.deepcopy({"data": data, "grid": {"datasets": ["ztf"]}})))
    if folder is None:
        config["data"]["release"]["path"] = None
    return config


def expected_images(release: dict) -> np.ndarray:
    return np.concatenate([release[s][1] for s in SPLITS]).transpose(0, 3, 1, 2).astype(np.float32)


@pytest.fixture(scope="module")
def release() -> dict:
    return make_release()


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, release) -> Path:
    return write_release(tmp_path_factory.mktemp("release"), release)


@pytest.fixture(scope="module")
def imported(tmp_path_factory, extracted) -> Path:
    out = tmp_path_factory.mktemp("out") / "ztf"
    ingest_release(config_for(extracted), out, progress=False)
    return out


def test_import_writes_the_contract(imported, release):
    ds = open_dataset(imported)
    df = ds.alerts
    assert list(df.columns[: len(REQUIRED_COLUMNS)]) == list(REQUIRED_COLUMNS)
    assert {"is_SN", "near_threshold", "is_rise", "acai_h", "magzpsci"} <= set(df.columns)
    assert df["alert_id"].dtype == np.int64 and df["alert_id"].is_unique
    assert df["label"].dtype == np.int8 and df["fid"].dtype == np.int8
    assert all(df[c].dtype == np.float32 for c in METADATA_FEATURES)
    assert df["candid"].dtype == np.float64
    source = pd.concat([release[s][0] for s in SPLITS], ignore_index=True)
    np.testing.assert_array_equal(df["candid"], source["candid"])
    np.testing.assert_array_equal(df["objectId"], source["objectId"])
    assert df["split"].tolist() == source["split"].tolist()  # the release's split, train then val then test
    assert ds.images.dtype == np.float32 and ds.images.shape == (len(source), 3, 63, 63)
    images = expected_images(release)
    for i in range(len(images)):
        np.testing.assert_array_equal(ds.images[i], images[i])
    m = ds.manifest
    assert (m["source"], m["dataset"], m["synthetic"]) == ("release", "ztf", False)
    assert m["skipped"] == {"duplicate_alert": 0, "nonfinite_triplet": 0}
    assert f"train_triplets_{TAG}.npy" in m["release"]["files"]["images"]
    assert any("new_drb" in note for note in m["notes"])
    assert m["alerts"] == json.loads(json.dumps(m["alerts"])) and m["n_alerts"] == len(source)


@pytest.mark.parametrize("prefix", ["", "btsbot_v10/"])
def test_zips_give_the_extracted_result(tmp_path, release, imported, prefix):
    folder = write_release(tmp_path / "zips", release, zipped=True, prefix=prefix)
    assert not list(folder.glob("*.npy"))
    ingest_release(config_for(folder), tmp_path / "out", progress=False)
    a, b = open_dataset(imported), open_dataset(tmp_path / "out")
    pd.testing.assert_frame_equal(a.alerts, b.alerts)  # alert_ids stable between imports
    np.testing.assert_array_equal(a.images, b.images)


def test_explicit_zip_keys(tmp_path, release, imported):
    folder = write_release(tmp_path / "zips", release, zipped=True)
    cfg = config_for(
        None, images_zip=str(folder / "images_v10.zip"), metadata_zip=str(folder / "metadata_v10.zip"), chunk_alerts=5
    )
    ingest_release(cfg, tmp_path / "out", progress=False)
    np.testing.assert_array_equal(open_dataset(tmp_path / "out").images, open_dataset(imported).images)


@pytest.mark.parametrize("chunk", [1, 7])
def test_chunking_does_not_change_the_result(tmp_path, extracted, imported, chunk):
    ingest_release(config_for(extracted, chunk_alerts=chunk), tmp_path / "out", progress=False)
    a, b = open_dataset(imported), open_dataset(tmp_path / "out")
    pd.testing.assert_frame_equal(a.alerts, b.alerts)
    np.testing.assert_array_equal(a.images, b.images)


def test_duplicates_are_dropped_and_counted(tmp_path):
    release = make_release(1)
    df, triplets = release["val"]
    # rows 5 and 9 repeat rows 2 and 3 (same objectId, jd, fid) with other images and values
    for dup, first in ((5, 2), (9, 3)):
        df.loc[dup, ["objectId", "jd", "fid", "label"]] = df.loc[first, ["objectId", "jd", "fid", "label"]].to_numpy()
    write_release(tmp_path / "rel", release)
    manifest = ingest_release(config_for(tmp_path / "rel", chunk_alerts=4), tmp_path / "out", progress=False)
    ds = open_dataset(tmp_path / "out")
    assert manifest["skipped"] == {"duplicate_alert": 2, "nonfinite_triplet": 0}
    assert len(ds.alerts) == sum(SIZES.values()) - 2 and ds.alerts["alert_id"].is_unique
    kept = np.ones(SIZES["val"], bool)
    kept[[5, 9]] = False
    images = np.concatenate([release["train"][1], triplets[kept], release["test"][1]])
    np.testing.assert_array_equal(ds.images, images.transpose(0, 3, 1, 2).astype(np.float32))
    val = ds.alerts[ds.alerts["split"] == "val"]
    np.testing.assert_array_equal(val["candid"], df["candid"][kept])


def test_nonfinite_triplets_are_dropped_with_their_rows_and_counted(tmp_path, caplog):
    release = make_release(2)
    train_df, train_trip = release["train"]
    val_df, val_trip = release["val"]
    train_trip[4, 10, 10, 0] = np.nan  # a NaN pixel in a science cutout
    val_trip[7, 0, 62, 2] = np.inf  # an infinite pixel in a difference cutout
    val_trip[8, 1, 1, 1] = -np.inf
    key = ["objectId", "jd", "fid", "label"]
    val_df.loc[11, key] = val_df.loc[7, key].to_numpy()  # a repeat too
    write_release(tmp_path / "rel", release)
    with caplog.at_level("WARNING"):
        manifest = ingest_release(config_for(tmp_path / "rel", chunk_alerts=3), tmp_path / "out", progress=False)
    assert manifest["skipped"] == {"duplicate_alert": 1, "nonfinite_triplet": 3}
    assert "3 triplet(s) hold NaN or infinite pixels" in caplog.text and str(train_df.loc[4, "objectId"]) in caplog.text
    ds = open_dataset(tmp_path / "out")
    assert np.isfinite(ds.images).all() and len(ds.alerts) == sum(SIZES.values()) - 4
    keep_train, keep_val = np.ones(SIZES["train"], bool), np.ones(SIZES["val"], bool)
    keep_train[4] = False
    keep_val[[7, 8, 11]] = False
    images = np.concatenate([train_trip[keep_train], val_trip[keep_val], release["test"][1]])
    np.testing.assert_array_equal(ds.images, images.transpose(0, 3, 1, 2).astype(np.float32))
    np.testing.assert_array_equal(ds.alerts.loc[ds.alerts["split"] == "val", "candid"], val_df["candid"][keep_val])


@pytest.mark.parametrize("zipped", [False, True])
def test_a_chunk_whose_rows_are_all_dropped_is_skipped(tmp_path, zipped):
    """Before, a chunk of only NaN triplets or repeats crashed the import: `TypeError: memoryview: cannot
    cast view with zeros in shape or strides`."""
    release = make_release(3)
    train_df, train_trip = release["train"]
    val_df, _ = release["val"]
    train_trip[[3, 4, 5], 20, 20, 1] = np.nan  # the whole second chunk of three
    key = ["objectId", "jd", "fid", "label"]
    for dup in (6, 7, 8):  # the whole third chunk of val repeats its first chunk
        val_df.loc[dup, key] = val_df.loc[dup - 6, key].to_numpy()
    write_release(tmp_path / "rel", release, zipped=zipped)
    manifest = ingest_release(config_for(tmp_path / "rel", chunk_alerts=3), tmp_path / "out", progress=False)
    assert manifest["skipped"] == {"duplicate_alert": 3, "nonfinite_triplet": 3}
    ds = open_dataset(tmp_path / "out")
    assert len(ds.alerts) == len(ds.images) == sum(SIZES.values()) - 6
    keep_train, keep_val = np.ones(SIZES["train"], bool), np.ones(SIZES["val"], bool)
    keep_train[[3, 4, 5]] = keep_val[[6, 7, 8]] = False
    images = np.concatenate([train_trip[keep_train], release["val"][1][keep_val], release["test"][1]])
    np.testing.assert_array_equal(ds.images, images.transpose(0, 3, 1, 2).astype(np.float32))


def _broken(tmp_path: Path, split: str, change) -> dict:
    release = make_release(2)
    df, triplets = release[split]
    release[split] = change(df.copy(), triplets)
    return config_for(write_release(tmp_path / "rel", release))


@pytest.mark.parametrize("zipped", [False, True])
def test_missing_feature_column_is_named(tmp_path, zipped):
    release = make_release(2)
    release["test"] = (release["test"][0].drop(columns="sgscore2"), release["test"][1])
    cfg = config_for(write_release(tmp_path / "rel", release, zipped=zipped))
    with pytest.raises(ReleaseError, match=r"test_cand_.*lacks column\(s\) the data contract needs: sgscore2$"):
        ingest_release(cfg, tmp_path / "out", progress=False)


def test_extra_columns_are_carried(tmp_path):
    cfg = _broken(tmp_path, "train", lambda df, t: (df.assign(my_flag=np.arange(len(df)) % 2 == 0), t))
    ingest_release(cfg, tmp_path / "out", progress=False)
    df = open_dataset(tmp_path / "out").alerts
    assert df.loc[df["split"] == "train", "my_flag"].tolist() == [i % 2 == 0 for i in range(SIZES["train"])]
    assert df.loc[df["split"] != "train", "my_flag"].isna().all()


def test_row_count_mismatch(tmp_path):
    cfg = _broken(tmp_path, "val", lambda df, t: (df, t[:-1]))
    with pytest.raises(ReleaseError, match=rf"val_cand_{TAG}.csv has 13 rows but .*val_triplets_{TAG}.npy holds 12"):
        ingest_release(cfg, tmp_path / "out", progress=False)


def test_wrong_triplet_shape(tmp_path):
    cfg = _broken(tmp_path, "val", lambda df, t: (df, t[..., :2]))
    with pytest.raises(ReleaseError, match=r"triplets of shape \(13, 63, 63, 2\)"):
        ingest_release(cfg, tmp_path / "out", progress=False)


def test_label_out_of_range(tmp_path):
    cfg = _broken(tmp_path, "train", lambda df, t: (df.assign(label=df["label"].where(df.index != 4, 2)), t))
    with pytest.raises(ReleaseError, match=r"train_cand_.*label must be 0 or 1, got 2 at CSV row 6"):
        ingest_release(cfg, tmp_path / "out", progress=False)


def test_split_column_disagrees(tmp_path):
    cfg = _broken(tmp_path, "test", lambda df, t: (df.assign(split=["test"] * (len(df) - 1) + ["train"]), t))
    with pytest.raises(ReleaseError, match=r"split column says 'train' .* in the test file"):
        ingest_release(cfg, tmp_path / "out", progress=False)


def test_source_in_two_splits(tmp_path):
    release = make_release(2)
    shared = release["train"][0]["objectId"].iloc[0]
    release["val"][0].loc[3, "objectId"] = shared
    cfg = config_for(write_release(tmp_path / "rel", release))
    message = rf"1 source\(s\) appear in more than one split, e.g. {shared} \(train & val\)"
    with pytest.raises(ReleaseError, match=message):
        ingest_release(cfg, tmp_path / "out", progress=False)


def test_missing_files(tmp_path, release):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        ReleaseError,
        match=rf"holds neither train_triplets_{TAG}.npy.* nor images_v10.zip.*"
        r"data.release.path.*data.release.images_zip",
    ):
        ingest_release(config_for(empty), tmp_path / "out", progress=False)
    with pytest.raises(ReleaseError, match=r"data.release.path is not set"):
        ingest_release(config_for(None), tmp_path / "out", progress=False)
    with pytest.raises(ReleaseError, match=r"data.release.images_zip: .*nowhere.zip not found"):
        ingest_release(config_for(None, images_zip=str(tmp_path / "nowhere.zip")), tmp_path / "out", progress=False)
    folder = write_release(tmp_path / "rel", release)
    (folder / f"val_cand_{TAG}.csv").unlink()
    with pytest.raises(ReleaseError, match=rf"holds neither val_cand_{TAG}.csv nor metadata_v10.zip.*metadata_zip"):
        ingest_release(config_for(folder), tmp_path / "out", progress=False)
    write_release(tmp_path / "zips", release, zipped=True)
    with pytest.raises(ReleaseError, match=r"has no member train_triplets_other.npy.*data.release.tag"):
        ingest_release(config_for(tmp_path / "zips", tag="other"), tmp_path / "out", progress=False)
    assert issubclass(ReleaseError, ContractError) and issubclass(ReleaseError, ValueError)


def test_a_failed_reimport_leaves_the_previous_dataset_whole(tmp_path, extracted, imported, monkeypatch):
    """Before, a re-import with a mistyped path or a bad table had already deleted the good dataset's
    manifest.json when it stopped."""
    out = tmp_path / "out"
    ingest_release(config_for(extracted), out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ReleaseError, match="is not a folder"):
        ingest_release(config_for(tmp_path / "mistyped"), out, progress=False)
    with pytest.raises(ReleaseError):
        ingest_release(config_for(extracted, tag="other"), out, progress=False)
    bad = make_release()
    bad["test"][0].loc[3, "label"] = 7
    with pytest.raises(ReleaseError, match="label must be 0 or 1"):
        ingest_release(config_for(write_release(tmp_path / "bad", bad)), out, progress=False)
    # a failure after the images were written (the disk full at the alerts table)
    from alertvision.data.ingest import release as module

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, "write_alerts", full)
    with pytest.raises(OSError, match="No space left"):
        ingest_release(config_for(extracted), out, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # and no temporary left
    pd.testing.assert_frame_equal(open_dataset(out).alerts, open_dataset(imported).alerts)


PEAK_RSS_CHILD = """
import sys
import pyarrow.parquet  # imported before the baseline: its libraries are not the import's memory
from alertvision.data.ingest.release import ingest_release
from tests_release_config import cfg

def peak_kib():  # VmHWM: the peak resident set of this program (ru_maxrss would carry the parent's over exec)
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))

before = peak_kib()
ingest_release(cfg, sys.argv[1], progress=False)
print(before, peak_kib())
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc/self/status")
def test_peak_memory_is_bounded_by_the_chunk(tmp_path):
    """Importing ~190 MB of triplets in 1.9 MB chunks must not grow the resident set by the file's size."""
    rng = np.random.default_rng(5)
    release = {s: make_split(s, n, rng) for s, n in {"train": 1600, "val": 200, "test": 200}.items()}
    folder = write_release(tmp_path / "rel", release)
    del release
    npy_bytes = sum(p.stat().st_size for p in folder.glob("*.npy"))
    cfg = config_for(folder, chunk_alerts=20)
    (tmp_path / "tests_release_config.py").write_text(f"cfg = {cfg!r}\n")
    res = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_CHILD, str(tmp_path / "out")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    before_kib, after_kib = map(int, res.stdout.split())
    growth = (after_kib - before_kib) * 1024
    assert growth < npy_bytes / 4, f"peak RSS grew by {growth / 1e6:.0f} MB reading {npy_bytes / 1e6:.0f} MB"
