"""The data contract: streamed images, stable ids, validation, atomic writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alertvision.atomic import atomic_path
from alertvision.data.contract import (
    REQUIRED_COLUMNS,
    ContractError,
    ImageArrayWriter,
    alert_ids,
    open_dataset,
    validate_alerts,
)


def test_image_writer_streams_a_loadable_memmap(tmp_path):
    path = tmp_path / "images.npy"
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(n, 3, 63, 63)) for n in (5, 1, 7)]
    with ImageArrayWriter(path) as w:
        for b in batches:
            w.append(b)
        assert not path.exists()  # nothing under the final name until closed
    arr = np.load(path, mmap_mode="r")
    assert isinstance(arr, np.memmap) and arr.dtype == np.float32 and arr.shape == (13, 3, 63, 63)
    np.testing.assert_allclose(arr, np.concatenate(batches).astype(np.float32))


def test_image_writer_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "images.npy"
    with pytest.raises(RuntimeError):
        with ImageArrayWriter(path) as w:
            w.append(np.zeros((2, 3, 63, 63)))
            raise RuntimeError("crash mid-way")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise ValueError
    assert target.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_alert_ids_are_stable_and_order_free():
    oid = pd.Series(["ZTF20aaa", "ZTF20aaa", "ZTF20bbb"])
    jd = pd.Series([2459000.5, 2459001.5, 2459000.5])
    fid = pd.Series([1, 1, 2])
    ids = alert_ids(oid, jd, fid)
    assert ids.dtype == np.int64 and len(set(ids)) == 3 and (ids >= 0).all()
    rev = alert_ids(oid[::-1], jd[::-1], fid[::-1])
    assert list(rev) == list(ids[::-1])


def _table(n=4):
    df = pd.DataFrame({c: np.zeros(n) for c in REQUIRED_COLUMNS})
    df["alert_id"] = np.arange(n)
    df["objectId"] = ["a", "a", "b", "c"][:n]
    df["split"] = ["train", "train", "val", "test"][:n]
    df["label"] = [1, 1, 0, 0][:n]
    df["source_set"] = "trues"
    df["isdiffpos"] = "t"
    df["fid"] = 1
    return df


def test_validate_alerts_checks_invariants():
    out = validate_alerts(_table())
    assert out["label"].dtype == np.int8 and out["sgscore1"].dtype == np.float32
    bad = _table()
    bad.loc[2, "objectId"] = "a"  # source 'a' now in train and val
    with pytest.raises(ContractError, match="more than one split"):
        validate_alerts(bad)
    with pytest.raises(ContractError, match="lacks column.*magpsf"):
        validate_alerts(_table().drop(columns=["magpsf"]))
    dup = _table()
    dup.loc[1, "alert_id"] = 0
    with pytest.raises(ContractError, match="not unique"):
        validate_alerts(dup)


def test_open_dataset_names_missing_file(tmp_path):
    with pytest.raises(ContractError, match="alerts.parquet is missing"):
        open_dataset(tmp_path)
