"""Export to ONNX: onnxruntime equals PyTorch on the whole test split, and the file carries its contract."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from alertvision.config import model_spec, training_params
from alertvision.data.contract import open_dataset
from alertvision.data.features import METADATA_FEATURES
from alertvision.deploy.export import EXPORT_FILES, PARITY_TOLERANCE, export_run, ort_session, triplet_digest
from alertvision.training.loop import train_run


@pytest.fixture(scope="module")
def split_file(tiny_datasets, tmp_path_factory):
    """10% of the training sources (a quick epoch) and the whole test split, which the parity check reads."""
    from alertvision.atomic import write_parquet
    from alertvision.data.splits import split_table

    path = tmp_path_factory.mktemp("splits") / "f10.parquet"
    write_parquet(path, split_table(open_dataset(tiny_datasets["ztf"]).alerts, 10, tiny_datasets["config"]["splits"]))
    return path


def _run(tiny_datasets, split_file, out, arch, modality):
    config = tiny_datasets["config"]
    if modality == "multimodal":
        config = {**config, "multimodal": {**config["multimodal"], "metadata_fill": "median"}}
    training = {**training_params(config, arch, modality), "epochs": 1, "patience": 1}
    info = {"arch": arch, "modality": modality, "regimen": "none", "fraction": "100", "seed": 0, "dataset": "ztf"}
    train_run(
        tiny_datasets["ztf"],
        split_file,
        out,
        arch_cfg=model_spec(config, arch, modality),
        training=training,
        seed=0,
        run_info=info,
        progress=False,
    )
    return out


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


def test_a_failed_parity_check_writes_nothing(tiny_datasets, split_file, tmp_path, monkeypatch):
    run = _run(tiny_datasets, split_file, tmp_path / "run", "cnn", "image")
    import alertvision.deploy.export as export

    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)  # no difference is small enough
    with pytest.raises(AssertionError, match="nothing exported"):
        export.export_run(run, tiny_datasets["ztf"], split_file, tmp_path / "export")
    assert not (tmp_path / "export").exists()
