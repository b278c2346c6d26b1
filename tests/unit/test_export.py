"""Export to ONNX: onnxruntime equals PyTorch on the whole test split, the file carries a contract a broker
can score real packets from (``broker_scorer``), and the export folder is written whole."""

from __future__ import annotations

import ast
import gzip
import io
import json
import shutil
from pathlib import Path

import broker_scorer
import numpy as np
import pandas as pd
import pytest
import torch
from astropy.io import fits
from conftest import packet_paths, quick_run

from alertvision.data.contract import open_dataset
from alertvision.data.features import DERIVED_FORMULAS, METADATA_FEATURES
from alertvision.deploy.calibration import Calibration, expected_calibration_error, fit_calibration, sigmoid
from alertvision.deploy.export import (
    EXPORT_FILES,
    PARITY_TOLERANCE,
    DeploySettings,
    ValidationFit,
    _calibration_section,
    choose_calibration,
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
    spec = json.loads(meta["alertvision.calibration"])
    assert spec["fitted_on"] == "validation split" and spec["requested"] == "temperature"
    if calibration.method == "none":  # temperature scaling made the validation ECE worse: not applied
        assert "made the validation ECE worse" in spec["fallback"] and "not applied" in card
        assert result["ece"]["validation, calibrated"] == result["ece"]["validation, raw"]
    else:
        assert calibration.method == "temperature" and spec["fallback"] is None
        assert result["ece"]["validation, calibrated"] <= result["ece"]["validation, raw"]
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


# ------------------------------------------------------------------ the broker contract (issue 27.4)


@pytest.fixture(scope="module")
def multimodal_export(tiny_datasets, quick_split_file, tmp_path_factory):
    """A multi-modal CNN exported with the default settings (its folder)."""
    root = tmp_path_factory.mktemp("contract")
    run = quick_run(tiny_datasets, quick_split_file, root / "run", "cnn", "multimodal")
    export_run(run, tiny_datasets["ztf"], quick_split_file, root / "export")
    return root / "export"


def _masked_packet_file(folder) -> Path:
    """A real packet, a day later, whose template holds ZTF's masked value in a corner, as an .avro file."""
    import fastavro

    with open(packet_paths()[0], "rb") as fh:
        reader = fastavro.reader(fh)
        schema, packet = reader.writer_schema, next(iter(reader))
    with fits.open(io.BytesIO(gzip.decompress(packet["cutoutTemplate"]["stampData"]))) as hdul:
        image = np.array(hdul[0].data, dtype=np.float32)
    image[50:, :20] = np.float32(-3.4e38)
    buf = io.BytesIO()
    fits.PrimaryHDU(image).writeto(buf)
    packet["cutoutTemplate"]["stampData"] = gzip.compress(buf.getvalue())
    # another alert (predict drops a repeat of the same detection before looking at its stamps)
    packet["candid"] += 1
    packet["candidate"]["candid"] += 1
    packet["candidate"]["jd"] += 1.0
    path = folder / "masked.avro"
    with open(path, "wb") as fh:
        fastavro.writer(fh, schema, [packet])
    return path


def test_the_broker_scorer_imports_nothing_of_alertvision():
    tree = ast.parse(Path(broker_scorer.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported and not any(name.split(".")[0] == "alertvision" for name in imported)


def test_a_scorer_written_from_the_contract_alone_reproduces_predict_on_real_packets(multimodal_export, tmp_path):
    """The 12 real packets and one with a masked template, scored by ``broker_scorer`` (the export's files and
    the packets only) and by ``alertvision predict``: the same alerts, logits, scores, cuts and triggers."""
    from alertvision.deploy.predict import predict

    files = [*packet_paths(), _masked_packet_file(tmp_path)]
    rows, dropped = broker_scorer.score_packets(multimodal_export / "model.onnx", files)
    report = predict(files, multimodal_export, tmp_path / "scores.parquet", progress=False)
    expected = pd.read_parquet(tmp_path / "scores.parquet")

    assert dropped == {"masked_pixels": 1} and report["skipped"] == {"stamp_masked_pixels": 1}
    got = pd.DataFrame(rows)
    assert len(got) == len(expected) == 12
    print(f"max |logit difference| scorer vs predict: {np.abs(got['logit'] - expected['logit']).max():.3g}")
    assert got["candid"].tolist() == expected["candid"].tolist()
    np.testing.assert_allclose(got["logit"], expected["logit"], rtol=0, atol=PARITY_TOLERANCE)
    np.testing.assert_allclose(got["score"], expected["score"], rtol=0, atol=PARITY_TOLERANCE)
    np.testing.assert_allclose(got["calibrated_score"], expected["calibrated_score"], rtol=0, atol=PARITY_TOLERANCE)
    for column in ["passes_cuts", *(c for c in expected.columns if c.startswith("trigger_"))]:
        assert got[column].tolist() == expected[column].tolist(), column

    # the comparison can fail: each derived feature, 30 days or magnitudes off (a wrong history gives such
    # errors), moves a logit well past the tolerance (the packets' features do reach the logit)
    session, meta = broker_scorer.read_contract(multimodal_export / "model.onnx")
    packets = broker_scorer.read_packets(packet_paths())
    feed = {
        "triplet": np.stack([broker_scorer.triplet(p, meta["alertvision.stamps"])[0] for p in packets]),
        "metadata": np.stack([broker_scorer.features(p, meta["alertvision.features"]) for p in packets]),
    }
    base = session.run(["logit"], feed)[0]
    np.testing.assert_allclose(base, expected["logit"], atol=PARITY_TOLERANCE)
    order = meta["alertvision.features"]["order"]
    for name in meta["alertvision.features"]["derived"]:
        moved = {**feed, "metadata": feed["metadata"].copy()}
        moved["metadata"][:, order.index(name)] += 30.0
        assert np.abs(session.run(["logit"], moved)[0] - base).max() > 10 * PARITY_TOLERANCE, name


def test_reference_rows_carry_their_inputs(multimodal_export):
    """reference.parquet alone: its triplets and features through plain onnxruntime give its logits."""
    session, meta = broker_scorer.read_contract(multimodal_export / "model.onnx")
    reference = pd.read_parquet(multimodal_export / "reference.parquet")
    triplets = np.stack([np.asarray(t, dtype=np.float32).reshape(3, 63, 63) for t in reference["triplet"]])
    assert [triplet_digest(t) for t in triplets] == reference["triplet_sha256"].tolist()
    metadata = reference[meta["alertvision.features"]["order"]].to_numpy(np.float32)
    logits = session.run(["logit"], {"triplet": triplets, "metadata": metadata})[0]
    np.testing.assert_allclose(logits, reference["logit"], atol=PARITY_TOLERANCE)
    np.testing.assert_allclose(
        reference["calibrated_score"], broker_scorer.calibrated(logits, meta["alertvision.calibration"]), atol=1e-6
    )


def test_the_contract_and_the_card_state_the_rules(multimodal_export):
    _, meta = broker_scorer.read_contract(multimodal_export / "model.onnx")
    stamps, feats = meta["alertvision.stamps"], meta["alertvision.features"]
    assert stamps["masked_pixels"]["rule"] == "drop" and stamps["norm"]["dtype"] == "float64"
    assert stamps["flip"] is False and stamps["smaller"] == {**stamps["smaller"], "pad_value": 0.0, "where": "end"}
    assert feats["order"] == list(METADATA_FEATURES) and feats["history"]["filters"] == "all"
    assert meta["alertvision.cuts"]["in_domain"].startswith("the model was trained")
    assert set(meta["alertvision.policies"]["policies"]) == set(POLICIES)
    # the survey: ZTF's, its block from the ZTF plugin (the same stamp rules and feature order)
    block = meta["alertvision.survey_block"]
    assert meta["alertvision.survey"] == "ZTF" and block["survey"] == "ztf" and block["stamps"] == stamps
    assert [f["name"] for f in block["metadata_features"]] == list(METADATA_FEATURES)
    card = (multimodal_export / "model_card.md").read_text()
    for name, (formula, _) in DERIVED_FORMULAS.items():
        assert f"| `{name}` | `{formula}` |" in card
    assert "## The contract" in card and "masked pixels" in card and "-3.4e38" in card


def test_a_calibration_that_worsens_the_validation_ece_is_not_applied():
    # calibrated groups at logit +-2 and a confident group at logit 8 with one negative: the log-loss fit
    # flattens every score and the ECE gets worse
    logits = np.r_[np.full(50, 2.0), np.full(10, 8.0), np.full(50, -2.0)]
    labels = np.r_[np.ones(44), np.zeros(6), np.ones(9), np.zeros(1), np.ones(6), np.zeros(44)]
    fitted = fit_calibration(logits, labels, "temperature")
    assert expected_calibration_error(fitted.apply(logits), labels) > expected_calibration_error(
        sigmoid(logits), labels
    )
    calibration, reason = choose_calibration(logits, labels, "temperature")
    assert calibration.method == "none" and "made the validation ECE worse" in reason
    fit = ValidationFit(calibration, {}, logits, labels, "temperature", reason)
    ece = dict.fromkeys(["validation, raw", "validation, calibrated", "test, raw", "test, calibrated"], 0.1)
    assert "Requested `temperature`, not applied" in _calibration_section(fit, ece)
    # a calibration that helps is kept
    shifted = np.r_[np.full(50, 4.0), np.full(50, -4.0)]
    kept, none = choose_calibration(shifted, np.r_[np.ones(40), np.zeros(10), np.ones(10), np.zeros(40)], "temperature")
    assert kept.method == "temperature" and none is None


def test_a_failed_export_leaves_the_previous_one_whole(tiny_datasets, split_file, tmp_path, monkeypatch):
    """The card cannot be written after the new model is: the previous export stays as it was, no temporary."""
    import alertvision.deploy.export as export

    run = _run(tiny_datasets, split_file, tmp_path / "run", "cnn", "image")
    out = tmp_path / "models" / "export"
    (tmp_path / "models" / ".export.killed.tmp").mkdir(parents=True)  # what a killed export leaves
    export.export_run(run, tiny_datasets["ztf"], split_file, out)
    assert [p.name for p in out.parent.iterdir()] == ["export"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    written = []

    def unwritable_card(path, text):
        written.extend(p.name for p in Path(path).parent.iterdir())
        raise PermissionError(f"{path}: read-only")

    monkeypatch.setattr(export, "write_text", unwritable_card)
    with pytest.raises(PermissionError):
        export.export_run(run, tiny_datasets["ztf"], split_file, out, settings=DeploySettings("none"))
    assert "model.onnx" in written  # the new model had been written when the card failed
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in out.parent.iterdir()] == ["export"]


def test_export_infers_the_cell_from_the_run_dir_and_records_study_paths(
    tiny_datasets, split_file, tmp_path, monkeypatch
):
    from alertvision.cli import main

    run = _run(tiny_datasets, split_file, tmp_path / "study" / "runs" / "r", "cnn", "image")
    (tmp_path / "study" / "config").mkdir()
    (tmp_path / "study" / "config" / "config.yaml").write_text("export: {calibration: none}\n")
    monkeypatch.chdir(tmp_path / "study")
    args = ["export", "--run-dir", str(run.resolve()), "--dataset-dir", str(tiny_datasets["ztf"])]
    args += ["--split", str(split_file), "--out", "model"]
    assert main(args) == 0
    card = (tmp_path / "study" / "model" / "model_card.md").read_text()
    assert "from `runs/r`." in card and str(tmp_path) not in card
    outside = tmp_path / "elsewhere"
    shutil.copytree(run, outside)
    assert main([*args[:2], str(outside), *args[3:-1], "model2"]) == 0
    card = (tmp_path / "study" / "model2" / "model_card.md").read_text()
    assert "from `elsewhere (a folder outside the study)`." in card and str(tmp_path) not in card
    with pytest.raises(SystemExit, match="--arch convnext disagrees"):
        main([*args, "--arch", "convnext"])
    with pytest.raises(SystemExit, match="give --arch"):
        main(["export", "--out", "model"])


def test_the_features_contract_covers_the_edge_cases(packets):
    """The contract's definitions, as ``broker_scorer`` reads them, against the features ``predict`` computes on
    packets with no history, a missing magnitude or jdstarthist, and a history with the alert itself, a later
    detection, repeats, a non-detection and a brighter detection in the other filter."""
    from alertvision.data.features import feature_contract
    from alertvision.data.ingest.packets import packet_features

    spec = json.loads(json.dumps(feature_contract("prv_candidates")))  # as the metadata carries it
    base = packets[5]
    cand = base["candidate"]
    prv = list(base["prv_candidates"] or [])
    detections = [p for p in prv if p.get("magpsf") is not None]
    extra = [
        {**detections[0], "jd": cand["jd"], "fid": cand["fid"], "magpsf": 10.0},  # the alert itself
        {**detections[0], "jd": cand["jd"] + 1.0, "magpsf": 11.0},  # later: not history
        dict(detections[-1]),  # a repeat
        {**detections[0], "magpsf": None},  # a non-detection
        {**detections[0], "jd": detections[0]["jd"] + 0.5, "fid": 3 - cand["fid"], "magpsf": 12.5},
    ]
    variants = {
        "as is": base,
        "no history": {**base, "prv_candidates": None},
        "no magpsf": {**base, "candidate": {**cand, "magpsf": None}},
        "no magpsf, no history": {**base, "candidate": {**cand, "magpsf": None}, "prv_candidates": []},
        "no jdstarthist": {**base, "candidate": {**cand, "jdstarthist": None}},
        "edge history": {**base, "prv_candidates": prv + extra},
    }
    for name, packet in variants.items():
        np.testing.assert_array_equal(broker_scorer.features(packet, spec), packet_features(packet), err_msg=name)
    derived = [METADATA_FEATURES.index(f) for f in DERIVED_FORMULAS]
    assert not np.array_equal(
        packet_features(variants["edge history"])[derived], packet_features(variants["as is"])[derived]
    )
