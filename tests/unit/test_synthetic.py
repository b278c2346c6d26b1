"""The synthetic BTS-like dataset: physics, features, contract, determinism, Legacy Survey pairing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from alertvision.data.contract import REQUIRED_COLUMNS, open_dataset
from alertvision.data.features import DERIVED_FEATURES, derive_source_features
from alertvision.data.legacysurvey import BIN, bin_cutout, coverage_problem, cube_to_image, north_up
from alertvision.synthetic.legacysurvey import synthetic_ls_cube
from alertvision.synthetic.ztf import build_synthetic_ztf, synthetic_scenes


def test_contract_and_manifest_say_synthetic(tiny_datasets):
    ds = open_dataset(tiny_datasets["ztf"])
    assert isinstance(ds.images, np.memmap) and ds.images.shape[1:] == (3, 63, 63)
    assert list(ds.alerts.columns[: len(REQUIRED_COLUMNS)]) == list(REQUIRED_COLUMNS)
    assert ds.manifest["synthetic"] is True and "SYNTHETIC" in ds.manifest["note"]
    assert set(ds.alerts["source_set"]) == {"trues", "dims", "vars", "rejects"}
    assert ds.alerts["objectId"].str.startswith("SYN").all()
    counts = ds.manifest["alerts"]
    assert sum(sum(v.values()) for v in counts.values()) == len(ds.alerts)


def test_images_went_through_the_triplet_function(tiny_datasets):
    ds = open_dataset(tiny_datasets["ztf"])
    sample = np.asarray(ds.images[:: max(1, len(ds.alerts) // 50)])
    np.testing.assert_allclose(np.linalg.norm(sample.reshape(len(sample), 3, -1), axis=2), 1.0, rtol=1e-4)
    assert np.isfinite(sample).all()


def test_cuts_and_labels(tiny_datasets):
    a = open_dataset(tiny_datasets["ztf"]).alerts
    assert (a["isdiffpos"] == "t").all() and a["fid"].isin([1, 2]).all()
    assert ((a["sgscore1"] >= 0) | (a["sgscore2"] >= 0)).all()
    assert (a["label"] == (a["source_set"] == "trues")).all()


def test_trues_and_dims_differ_by_peak_brightness(tiny_datasets):
    a = open_dataset(tiny_datasets["ztf"]).alerts
    peaks = a.groupby("objectId").agg(subset=("source_set", "first"), peak=("sim_peak_mag", "first"))
    assert (peaks.loc[peaks.subset == "trues", "peak"] <= 18.5).all()
    assert (peaks.loc[peaks.subset == "dims", "peak"] >= 18.5).all()
    # and per alert the observed magnitudes overlap: a single alert does not give the answer away
    t = a.loc[a.source_set == "trues", "magpsf"]
    d = a.loc[a.source_set == "dims", "magpsf"]
    assert t.max() > d.min()


def test_derived_features_match_the_light_curve(tiny_datasets):
    from alertvision.data.features import cut_mask
    from alertvision.synthetic.observe import observe

    config = tiny_datasets["config"]["data"]["synthetic"]
    a = open_dataset(tiny_datasets["ztf"]).alerts.set_index(["objectId", "jd"])
    checked = 0
    for scene in synthetic_scenes(config)[:40]:
        rows, _ = observe(scene, config["cadence_days"], config["nan_patch_rate"], config["edge_rate"])
        if not rows:
            continue
        # derived over every alert the source issued up to each one (before cuts), as BTSbot does
        raw = pd.DataFrame(rows)
        expected = derive_source_features(raw)[cut_mask(raw).to_numpy()].set_index(["objectId", "jd"])
        for col in DERIVED_FEATURES:
            got = a.loc[expected.index, col].to_numpy()
            np.testing.assert_allclose(got, expected[col].astype(np.float32), rtol=1e-6, atol=1e-4)
        checked += len(expected)
    assert checked > 50
    assert (a["nnotdet"] >= 0).all() and (a["age"] >= 0).all() and (a["days_since_peak"] >= 0).all()


def test_rebuild_is_identical(tiny_datasets, tmp_path):
    config = tiny_datasets["config"]
    build_synthetic_ztf(config["data"]["synthetic"], config["splits"], tmp_path, progress=False)
    a, b = open_dataset(tiny_datasets["ztf"]), open_dataset(tmp_path)
    pd.testing.assert_frame_equal(a.alerts, b.alerts)
    assert np.array_equal(np.asarray(a.images), np.asarray(b.images))


def test_ls_dataset_drops_uncovered_sources_and_keeps_splits(tiny_datasets):
    ztf, ls = open_dataset(tiny_datasets["ztf"]), open_dataset(tiny_datasets["ls"])
    cov = ls.manifest["coverage"]
    n_src = ztf.alerts["objectId"].nunique()
    assert sum(cov["sources"].values()) == n_src
    assert cov["sources"]["covered"] == ls.alerts["objectId"].nunique()
    assert 0.05 < cov["uncovered_fraction"] < 0.45
    assert cov["alerts_dropped"] == len(ztf.alerts) - len(ls.alerts)
    merged = ls.alerts.merge(ztf.alerts[["alert_id", "split"]], on="alert_id", suffixes=("", "_ztf"))
    assert len(merged) == len(ls.alerts) and (merged["split"] == merged["split_ztf"]).all()
    # one image per source, shared by all its alerts
    first = ls.alerts.groupby("objectId").head(1).index
    for i in first[:10]:
        rows = ls.alerts.index[ls.alerts["objectId"] == ls.alerts.loc[i, "objectId"]]
        assert all(np.array_equal(ls.images[i], ls.images[j]) for j in rows)
    assert ls.manifest["synthetic"] is True


def test_ls_binning_conserves_flux_and_orientation():
    rng = np.random.default_rng(0)
    cube = rng.random((3, 252, 252)).astype(np.float32)
    cube[:, :4, :4] += 100.0  # a bright block in FITS row 0 (south), column 0 (east)
    image = cube_to_image(cube)
    assert image.shape == (3, 63, 63)
    np.testing.assert_allclose(image.sum(axis=(1, 2)), cube.sum(axis=(1, 2)), rtol=1e-5)
    assert image[0, -1, 0] > 1000 and image[0, 0, 0] < 50  # south ends at the bottom row
    assert np.array_equal(bin_cutout(north_up(cube)), image) and BIN == 4


def test_synthetic_ls_cube_is_in_viewer_format():
    cfg = {
        "seed": 1,
        "n_sources": 40,
        "subset_fractions": {"trues": 1, "dims": 0, "vars": 0, "rejects": 0},
        "season_days": [5, 10],
        "star_density": 0.0,
    }
    scenes = [s for s in synthetic_scenes(cfg) if s.host is not None]
    scene = max(scenes, key=lambda s: -s.host.mag_r)
    cube = synthetic_ls_cube(scene, {"coverage": 1.0, "partial_rate": 0.0})
    assert cube.dtype == np.float32 and cube.shape == (3, 252, 252)
    assert coverage_problem(cube_to_image(cube), 0.3) is None
    none = synthetic_ls_cube(scene, {"coverage": 0.0, "partial_rate": 0.0})
    assert none is None
    zeros = np.zeros((3, 63, 63), np.float32)
    assert coverage_problem(zeros, 0.3) == "all_zero_band"


def test_a_failed_rewrite_leaves_the_previous_dataset_whole(tiny_datasets, tmp_path, monkeypatch):
    """Before, a failed rewrite had already removed the previous dataset's manifest.json."""
    import shutil

    from alertvision.synthetic import ztf

    target = tmp_path / "ztf"
    shutil.copytree(tiny_datasets["ztf"], target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ztf, "write_alerts", crash)
    config = tiny_datasets["config"]
    with pytest.raises(RuntimeError, match="disk full"):
        build_synthetic_ztf(config["data"]["synthetic"], config["splits"], target, progress=False)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before  # no temporary left either
    assert len(open_dataset(target).alerts) == len(open_dataset(tiny_datasets["ztf"]).alerts)


def test_manifest_is_json(tiny_datasets):
    data = json.loads((tiny_datasets["ls"] / "manifest.json").read_text())
    assert data["dataset"] == "ls" and data["orientation"] == "north up, east left"
