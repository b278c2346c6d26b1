"""Export to ONNX: onnxruntime equals PyTorch on the whole test split, and the file carries its contract."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import quick_run

from alertvision.data.contract import open_dataset
from alertvision.data.features import METADATA_FEATURES
from alertvision.deploy.calibration import Calibration
from alertvision.deploy.export import (
    EXPORT_FILES,
    PARITY_TOLERANCE,
    DeploySettings,
    export_run,
    fit_on_validation,
    ort_session,
    triplet_digest,
)
from alertvision.evaluation.policies import POLICIES
from alertvision.models import model_from_payload


@pytest.fixture
def split_file(quick_split_file):
    """10% of the training sources (a quick epoch) and the whole test split, which the parity check reads."""
    return quick_split_file


def _run(tiny_datasets, split_file, out, arch, modality):
    return quick_run(tiny_datasets, split_file, out, arch, modality)


@pytest.mark.parametrize(
    "arch, modality",
    [("cnn", "image"), ("convnext", "image"), ("maxvit", "image"), ("cnn", "multimodal"), ("maxvit", "multimodal")]
    + [("convnext", "multimodal"), ("none", "multimodal")],
)
def test_onnx_equals_pytorch_on_the_test_split_and_carries_its_contract(
    tiny_datasets, split_file, tmp_path, arch, modality
):
    run = _run(tiny_datasets, split_file, tmp_path / "run", arch, modality)
    out = tmp_path / "export"
    result = export_run(run, tiny_datasets["ztf"], split_file, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPORT_FILES)
    n_test = int((pd.read_parquet(split_file)["split"] == "test").sum())
    assert result["parity"]["n_test_alerts"] == n_test
    assert result["parity"]["max_abs_logit_diff"] <= PARITY_TOLERANCE

    session = ort_session(out / "model.onnx")
    meta = session.get_modelmeta().custom_metadata_map
    inputs = json.loads(meta["alertvision.inputs"])
    assert inputs == [i.name for i in session.get_inputs()]
    assert inputs == (
        {"none": ["metadata"]}.get(arch) or (["triplet", "metadata"] if modality == "multimodal" else ["triplet"])
    )
    if modality == "multimodal":
        assert json.loads(meta["alertvision.metadata_features"]) == list(METADATA_FEATURES)
        assert json.loads(meta["alertvision.metadata_fill"])["policy"] == "median"
    assert meta["alertvision.synthetic"] == "true" and meta["alertvision.output"].startswith("logit")

    # the reference alerts: their digests are the stored triplets', and the file scores them as recorded
    reference = pd.read_parquet(out / "reference.parquet")
    data = open_dataset(tiny_datasets["ztf"])
    by_id = dict(zip(data.alerts["alert_id"], range(len(data.alerts))))
    rows = np.array([by_id[a] for a in reference["alert_id"]])
    feed = {}
    if "triplet" in inputs:
        assert list(reference["triplet_sha256"]) == [triplet_digest(data.images[r]) for r in rows]
        feed["triplet"] = np.ascontiguousarray(data.images[rows], dtype=np.float32)
    if "metadata" in inputs:
        feed["metadata"] = reference[list(METADATA_FEATURES)].to_numpy(np.float32)
    logits = session.run(["logit"], feed)[0]
    np.testing.assert_allclose(logits, reference["logit"].to_numpy(), atol=PARITY_TOLERANCE)
    card = (out / "model_card.md").read_text()
    assert "SYNTHETIC" in card and f"all {n_test} test alerts" in card and "import json, numpy as np" in card

    # calibration and thresholds travel in the file; the reference's calibrated scores follow from its logits
    calibration = Calibration.from_spec(meta["alertvision.calibration"])
    assert calibration.method == "temperature" and json.loads(meta["alertvision.calibration"])["fitted_on"] == (
        "validation split"
    )
    np.testing.assert_allclose(reference["calibrated_score"], calibration.apply(reference["logit"]), atol=1e-12)
    thresholds = json.loads(meta["alertvision.thresholds"])
    assert thresholds["score"] == "calibrated" and set(thresholds["policies"]) == set(POLICIES)
    assert set(result["ece"]) == {"validation, raw", "validation, calibrated", "test, raw", "test, calibrated"}
    assert "Calibration and recommended thresholds" in card and "| prod_p1 |" in card


class _RecordingArray:
    """An array that records the rows read from it."""

    def __init__(self, array: np.ndarray):
        self.array, self.read = array, set()

    def __getitem__(self, rows):
        self.read.update(np.atleast_1d(np.arange(len(self.array))[rows]).tolist())
        return self.array[rows]


def test_calibration_and_thresholds_read_only_the_validation_split(tiny_datasets, split_file, tmp_path):
    run = _run(tiny_datasets, split_file, tmp_path / "run", "cnn", "multimodal")
    model, _ = model_from_payload(torch.load(run / "model.pt", weights_only=True), run / "model.pt")
    data = open_dataset(tiny_datasets["ztf"])
    split = pd.read_parquet(split_file)
    val_rows = np.sort(split.loc[split["split"] == "val", "row"].to_numpy())
    images = _RecordingArray(np.asarray(data.images))
    metadata = _RecordingArray(data.alerts[list(METADATA_FEATURES)].to_numpy(np.float32))
    fit = fit_on_validation(model, images, metadata, data.alerts.iloc[val_rows], val_rows, DeploySettings())
    assert images.read == metadata.read == set(val_rows.tolist())
    assert len(fit.logits) == len(val_rows) and set(fit.thresholds) == set(POLICIES)


def test_test_labels_do_not_move_the_calibration_or_the_thresholds(tiny_datasets, split_file, tmp_path):
    """The whole export: with the test split's labels flipped, the calibration and thresholds stay the same."""
    import shutil

    from alertvision.atomic import write_parquet

    run = _run(tiny_datasets, split_file, tmp_path / "run", "cnn", "image")
    flipped = tmp_path / "flipped"
    shutil.copytree(tiny_datasets["ztf"], flipped)
    alerts = pd.read_parquet(flipped / "alerts.parquet")
    test_rows = pd.read_parquet(split_file).query("split == 'test'")["row"].to_numpy()
    alerts.loc[test_rows, "label"] = 1 - alerts.loc[test_rows, "label"]
    write_parquet(flipped / "alerts.parquet", alerts)
    first = export_run(run, tiny_datasets["ztf"], split_file, tmp_path / "a")
    second = export_run(run, flipped, split_file, tmp_path / "b")
    assert first["calibration"] == second["calibration"] and first["thresholds"] == second["thresholds"]
    assert first["ece"]["test, raw"] != second["ece"]["test, raw"]  # the test labels did change


def test_a_failed_parity_check_writes_nothing(tiny_datasets, split_file, tmp_path, monkeypatch):
    run = _run(tiny_datasets, split_file, tmp_path / "run", "cnn", "image")
    import alertvision.deploy.export as export

    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)  # no difference is small enough
    with pytest.raises(AssertionError, match="nothing exported"):
        export.export_run(run, tiny_datasets["ztf"], split_file, tmp_path / "export")
    assert not (tmp_path / "export").exists()
