"""Rubin/LSST alerts through the pipeline: the avro source reads the 7 real Rubin alerts
(tests/data/lsst_alerts) with a labels table keyed by diaObjectId into the data contract, a CNN trains on
them for one epoch on the CPU, the export names LSST and carries the plugin's survey block, and
``alertvision predict --survey lsst`` scores the packets (container and wire framing, file, folder, tar and
stdin) as the export's PyTorch and ONNX paths do, and refuses a model of the other survey.

The labels are MADE UP here (alternating 0/1 by diaObjectId): the test checks the plumbing, not a
classifier; nothing here is a science result."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import fastavro
import numpy as np
import pandas as pd
import pytest
import torch
from test_lsst import as_rubin, rubin_schema

from alertvision.config import validate_config
from alertvision.data.contract import ContractError, open_dataset
from alertvision.data.ingest.avro import AvroInputError
from alertvision.data.ingest.labels import LabelsError
from alertvision.data.sources import ingest_lsst, source_input_files, survey_config
from alertvision.deploy.export import export_run, torch_logits
from alertvision.deploy.predict import PredictInputError, _check_inputs, load_model, predict
from alertvision.models import load_model as load_torch_model
from alertvision.study.jobs import TrainJob, model_spec, training_params
from alertvision.surveys import get_survey
from alertvision.surveys.lsst.packets import encode_wire, schema_id

REAL = Path(__file__).resolve().parents[1] / "data" / "lsst_alerts" / "part-2-918301.avro"


def _records() -> list[dict]:
    with open(REAL, "rb") as fh:
        return list(fastavro.reader(fh))


def _labels(path: Path) -> Path:
    """MADE-UP labels (0/1 alternating) for every diaObject of the real alerts, one source set, so the 4
    alerts that pass the cuts split 2/1/1 into train/val/test."""
    ids = sorted({r["diaSource"]["diaObjectId"] for r in _records() if r["diaSource"]["diaObjectId"]})
    pd.DataFrame({"diaObjectId": ids, "label": [i % 2 for i in range(len(ids))], "source_set": "all"}).to_csv(
        path, index=False
    )
    return path


def _config(packets: Path, labels: Path, **lsst) -> dict:
    return validate_config(
        {
            "data": {"lsst": {"source": "avro", "avro": {"path": str(packets), "labels": str(labels)}, **lsst}},
            "splits": {"probabilities": [0.5, 0.25, 0.25]},
            "grid": {"datasets": ["lsst"]},
        }
    )


@pytest.fixture(scope="module")
def lsst_run(tmp_path_factory):
    """The dataset, a one-epoch CNN run on it and its export."""
    from alertvision.training.loop import train_run

    root = tmp_path_factory.mktemp("lsst")
    config = _config(REAL.parent, _labels(root / "labels.csv"))
    manifest = ingest_lsst(config, root / "data", progress=False)
    split = root / "split.parquet"
    # 4 alerts cannot give val and test both classes each: the run trains, validates and tests on all four
    # (plumbing, not a measurement; the dataset's own splits are checked below)
    alerts = open_dataset(root / "data").alerts
    rows = np.arange(len(alerts))
    pd.DataFrame(
        {
            "alert_id": np.tile(alerts["alert_id"].to_numpy(), 3),
            "row": np.tile(rows, 3),
            "split": np.repeat(["train", "val", "test"], len(rows)),
        }
    ).to_parquet(split)
    training = {**training_params(config, "cnn", "image"), "epochs": 1, "patience": 1}
    info = {"arch": "cnn", "modality": "image", "regimen": "none", "fraction": "100", "seed": 0, "dataset": "lsst"}
    train_run(
        TrainJob.local(
            root / "data",
            split,
            root / "run",
            model=model_spec(config, "cnn", "image"),
            training=training,
            seed=0,
            info=info,
        ),
        progress=False,
    )
    result = export_run(root / "run", root / "data", split, root / "export")
    return {"root": root, "config": config, "manifest": manifest, "split": split, "export": result}


def test_the_avro_source_reads_lsst_packets_into_the_data_contract(lsst_run):
    root, manifest = lsst_run["root"], lsst_run["manifest"]
    data = open_dataset(root / "data")
    assert manifest["survey"] == "lsst" and isinstance(data.images, np.memmap)
    # 7 alerts: two solar-system ones (diaObjectId 0) and one negative difference are cut, counted
    assert manifest["skipped"] == {"cut:dia_object": 2, "cut:positive": 1} and manifest["n_alerts"] == 4
    survey = get_survey("lsst")
    assert manifest["metadata_features"] == list(survey.feature_names) and manifest["image_shape"] == [3, 63, 63]
    by_id = {r["diaSourceId"]: r for r in _records()}
    labels = pd.read_csv(root / "labels.csv", dtype={"diaObjectId": str}).set_index("diaObjectId")
    for i, row in data.alerts.iterrows():
        packet = by_id[row["alert_id"]]
        assert data.images[i].tobytes() == survey.triplet(packet).tobytes()
        np.testing.assert_array_equal(row[list(survey.feature_names)].to_numpy(np.float32), survey.features(packet))
        assert row["objectId"] == str(packet["diaSource"]["diaObjectId"])
        assert row["jd"] == packet["diaSource"]["midpointMjdTai"] + 2400000.5
        assert row["label"] == labels.loc[row["objectId"], "label"]
    assert sorted(data.alerts["split"]) == ["test", "train", "train", "val"]


def test_an_lsst_labels_table_without_a_diaobjectid_is_refused(tmp_path):
    bad = tmp_path / "labels.csv"
    pd.DataFrame({"objectId": ["ZTF1"], "label": [1], "source_set": ["all"]}).to_csv(bad, index=False)
    with pytest.raises(LabelsError, match="has a diaObjectId column and no objectId"):
        ingest_lsst(_config(REAL.parent, bad), tmp_path / "data", progress=False)
    # a diaObjectId no packet has: nothing survives, and the error says what was skipped
    pd.DataFrame({"diaObjectId": [12345], "label": [1], "source_set": ["all"]}).to_parquet(tmp_path / "l.parquet")
    with pytest.raises(ContractError, match="no alert of the 1 labelled diaObjects.*unlabelled_source"):
        ingest_lsst(_config(REAL.parent, tmp_path / "l.parquet"), tmp_path / "data", progress=False)


def test_the_lsst_dataset_reads_data_lsst_avro_and_names_its_keys(tmp_path):
    labels = _labels(tmp_path / "labels.csv")
    config = _config(REAL.parent, labels, triplet={"size": 31})
    # the view the plugins read: Rubin's source, packets and settings; nothing of the ZTF avro block
    view = survey_config(config, "lsst")["data"]
    assert (view["survey"], view["source"], view["avro"]) == (
        "lsst",
        "avro",
        {"path": str(REAL.parent), "labels": str(labels)},
    )
    assert view["lsst"] == {"triplet": {"size": 31}}
    assert survey_config(config, "ztf") is config
    # what Snakemake fingerprints: the packets and the labels (the ZTF dataset reads none of them)
    assert {str(REAL), str(labels)} <= set(source_input_files(config, "lsst"))
    assert source_input_files(config, "ztf") == []
    with pytest.raises(AvroInputError, match="config key data.lsst.avro.path"):
        ingest_lsst(_config(tmp_path / "missing", labels), tmp_path / "data", progress=False)
    with pytest.raises(LabelsError, match="config key data.lsst.avro.labels"):
        ingest_lsst(_config(REAL.parent, tmp_path / "missing.csv"), tmp_path / "data", progress=False)


def test_the_lsst_export_names_its_survey_and_its_block(lsst_run):
    metrics = json.loads((lsst_run["root"] / "run" / "metrics.json").read_text())
    assert metrics["survey"] == "lsst"
    card = (lsst_run["root"] / "export" / "model_card.md").read_text()
    assert "Survey **LSST**" in card and "Ranking LSST alerts" in card
    contract = lsst_run["export"]["contract"]
    assert contract["alertvision.survey"] == "LSST"
    block = json.loads(contract["alertvision.survey_block"])
    assert block["survey"] == "lsst" and block["triplet"]["size"] == 63
    assert json.loads(contract["alertvision.channels"]) == ["science", "template", "difference"]


def _expected_logits(lsst_run, packets: list[dict]) -> np.ndarray:
    """The run's PyTorch logits of the packets' triplets (the export's PyTorch path)."""
    model, _ = load_torch_model(lsst_run["root"] / "run" / "model.pt")
    survey = get_survey("lsst")
    images = np.stack([survey.triplet(p) for p in packets])
    return torch_logits(model, images, None, np.arange(len(packets)))


def test_predict_scores_lsst_packets_as_the_export_does_in_every_framing(lsst_run, tmp_path):
    export = lsst_run["root"] / "export"
    records = _records()
    expected = dict(zip([r["diaSourceId"] for r in records], _expected_logits(lsst_run, records)))
    out = tmp_path / "container.parquet"
    report = predict([str(REAL)], export, out, progress=False, survey="lsst")
    scores = pd.read_parquet(out)
    assert report["alerts_scored"] == 7 and report["survey"] == "lsst"
    assert report["cut"] == {"cut:dia_object": 2, "cut:positive": 1} and report["skipped"] == {}
    np.testing.assert_allclose(scores["logit"], [expected[c] for c in scores["candid"]], atol=1e-4)
    onnx = load_model(export, survey="lsst")
    survey = get_survey("lsst")
    images = np.stack([survey.triplet(r) for r in records])
    np.testing.assert_allclose(scores["logit"], onnx.logits(images, None), atol=1e-6)
    assert scores.loc[~scores["passes_cuts"], "candid"].tolist() == [
        r["diaSourceId"] for r in records if survey.failed_cut(r) is not None
    ]

    # wire packets (the schema from Rubin's package), in a folder, in a tar archive, and on stdin
    wire = tmp_path / "wire"
    wire.mkdir()
    sid = schema_id("10.0")
    schema = rubin_schema("10.0")
    for r in records:
        (wire / f"{r['diaSourceId']}.avro").write_bytes(encode_wire(as_rubin(r), schema, sid))
    tar = tmp_path / "wire.tar"
    with tarfile.open(tar, "w") as fh:
        fh.add(wire, arcname="wire")
    for inputs in ([str(wire)], [str(tar)]):
        report = predict(inputs, export, tmp_path / "w.csv", progress=False, survey="lsst")
        got = pd.read_csv(tmp_path / "w.csv")
        assert report["alerts_scored"] == 7 and report["skipped"] == {}
        np.testing.assert_allclose(got["logit"], [expected[c] for c in got["candid"]], atol=1e-4)
    one = records[1]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "alertvision",
            "predict",
            "-",
            "--model",
            str(export),
            "--out",
            str(tmp_path / "s.csv"),
            "--survey",
            "lsst",
            "--quiet",
        ],
        input=encode_wire(as_rubin(one), schema, sid),
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    got = pd.read_csv(tmp_path / "s.csv")
    assert got["candid"].tolist() == [one["diaSourceId"]]
    np.testing.assert_allclose(got["logit"], [expected[one["diaSourceId"]]], atol=1e-4)


def test_predict_refuses_a_model_of_the_other_survey(lsst_run, tmp_path):
    export = lsst_run["root"] / "export"
    with pytest.raises(PredictInputError, match="model of survey 'LSST'; these are ZTF packets"):
        load_model(export)  # the default: ZTF packets
    with pytest.raises(PredictInputError, match="model of survey 'LSST'; these are ZTF packets"):
        predict([str(REAL)], export, tmp_path / "x.csv", progress=False)
    assert not (tmp_path / "x.csv").exists()
    # a ZTF model (its contract names ZTF, or no survey: exported before the key) is refused for LSST packets
    for contract in ({"alertvision.survey": "ZTF"}, {}):
        with pytest.raises(PredictInputError, match="model of survey 'ZTF'; these are LSST packets"):
            _check_inputs(contract, None, Path("model.onnx"), "lsst")


def _train_multimodal(lsst_run, name: str, fill: str) -> dict:
    """A one-epoch multi-modal CNN on the dataset and split of ``lsst_run`` (the 23 LSST features beside the
    triplet; non-finite features: ``fill``, ``multimodal.metadata_fill``) and its export."""
    from alertvision.training.loop import train_run

    root, config = lsst_run["root"], lsst_run["config"]
    spec = model_spec(config, "cnn", "multimodal").with_values(metadata_fill=fill)
    training = {**training_params(config, "cnn", "multimodal"), "epochs": 1, "patience": 1}
    info = {"arch": "cnn", "modality": "multimodal", "regimen": "none", "fraction": "100", "seed": 0, "dataset": "ztf"}
    run = root / f"{name}_run"
    train_run(
        TrainJob.local(root / "data", lsst_run["split"], run, model=spec, training=training, seed=0, info=info),
        progress=False,
    )
    result = export_run(run, root / "data", lsst_run["split"], root / f"{name}_export")
    return {"run": run, "export": root / f"{name}_export", "result": result}


@pytest.fixture(scope="module")
def lsst_multimodal(lsst_run):
    """Multi-modal CNN runs on the LSST dataset: ``error`` (no fill) and ``median`` (filled in the graph)."""
    return {fill: _train_multimodal(lsst_run, f"mm_{fill}", fill) for fill in ("error", "median")}


def _predict_checked(model: dict, out: Path) -> tuple[dict, pd.DataFrame]:
    """predict's report and rows of the 7 real alerts, after checking its logits equal the export's ONNX path
    (1e-6) and the run's PyTorch model (1e-4) fed the plugin's triplets and features."""
    report = predict([str(REAL)], model["export"], out, progress=False, survey="lsst")
    scores = pd.read_parquet(out)
    survey = get_survey("lsst")
    by_id = {r["diaSourceId"]: r for r in _records()}
    chosen = [by_id[c] for c in scores["candid"]]
    images = np.stack([survey.triplet(r) for r in chosen])
    features = np.stack([survey.features(r) for r in chosen]).astype(np.float32)
    onnx = load_model(model["export"], survey="lsst")
    assert onnx.takes_images and onnx.takes_metadata
    np.testing.assert_allclose(scores["logit"], onnx.logits(images, features), atol=1e-6)
    torch_model, _ = load_torch_model(model["run"] / "model.pt")
    np.testing.assert_allclose(
        scores["logit"], torch_logits(torch_model, images, features, np.arange(len(chosen))), atol=1e-4
    )
    return report, scores


def test_a_multimodal_lsst_run_reads_the_23_lsst_features_and_predict_scores_it(lsst_multimodal, tmp_path):
    names = list(get_survey("lsst").feature_names)
    assert len(names) == 23
    for fill, model in lsst_multimodal.items():
        payload = torch.load(model["run"] / "model.pt", weights_only=True)
        assert payload["metadata_features"] == names
        assert payload["state_dict"]["metadata.body.0.running_mean"].shape == (23,)
        contract = model["result"]["contract"]
        assert json.loads(contract["alertvision.metadata_features"]) == names
        assert json.loads(contract["alertvision.input_shapes"])["metadata"] == ["batch", 23]
        assert json.loads(contract["alertvision.metadata_fill"])["policy"] == fill
        assert "float32 (batch, 23)" in (model["export"] / "model_card.md").read_text()

    # no fill (metadata_fill: error): the three alerts with a non-finite feature (the two solar-system
    # alerts have no diaObject history, the negative difference no PSF magnitude) are skipped by the
    # plugin's feature names; the four others are scored
    report, scores = _predict_checked(lsst_multimodal["error"], tmp_path / "error.parquet")
    assert report["skipped"] == {"nonfinite_ndethist": 2, "nonfinite_psf_mag": 1}
    assert report["alerts_scored"] == 4 and scores["passes_cuts"].all()
    # filled inside the graph (median): all seven scored, the non-finite features fed as they are
    report, scores = _predict_checked(lsst_multimodal["median"], tmp_path / "median.parquet")
    assert report["skipped"] == {} and report["alerts_scored"] == 7
    assert report["cut"] == {"cut:dia_object": 2, "cut:positive": 1}


def test_a_multimodal_lsst_model_is_not_exported_with_a_dataset_of_other_features(lsst_multimodal, tmp_path):
    data = tmp_path / "data"
    run = lsst_multimodal["median"]["run"]
    shutil.copytree(run.parent / "data", data)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["metadata_features"] = manifest["metadata_features"][::-1]
    (data / "manifest.json").write_text(json.dumps(manifest))
    split = run.parent / "split.parquet"
    with pytest.raises(ValueError, match="reads the metadata features .* export it with the dataset it was trained on"):
        export_run(run, data, split, tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_predict_reads_wire_packets_schemas_from_the_folder_the_user_names(lsst_run, tmp_path):
    export = lsst_run["root"] / "export"
    records = _records()
    expected = dict(zip([r["diaSourceId"] for r in records], _expected_logits(lsst_run, records)))
    wire = tmp_path / "wire"
    wire.mkdir()
    sid = schema_id("10.0")
    for r in records:
        (wire / f"{r['diaSourceId']}.avro").write_bytes(encode_wire(as_rubin(r), rubin_schema("10.0"), sid))
    # the 10.0 schema, complete, under its wire id, as a registry serves it (written to a temporary folder)
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / f"{sid}.avsc").write_text(json.dumps(rubin_schema("10.0")))
    assert load_model(export, survey="lsst", schemas=schemas).plugin.schemas.folder == schemas
    done = subprocess.run(
        [
            *(sys.executable, "-m", "alertvision", "predict", str(wire), "--model", str(export)),
            *("--out", str(tmp_path / "w.csv"), "--survey", "lsst", "--schemas", str(schemas), "--quiet"),
        ],
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    got = pd.read_csv(tmp_path / "w.csv")
    assert len(got) == 7
    np.testing.assert_allclose(got["logit"], [expected[c] for c in got["candid"]], atol=1e-4)
    # the folder is searched before the installed package: two files for one id there stop every packet
    (schemas / f"{sid}.json").write_text(json.dumps(rubin_schema("10.0")))
    report = predict([str(wire)], export, tmp_path / "a.csv", progress=False, survey="lsst", schemas=schemas)
    assert report["alerts_scored"] == 0 and report["skipped"] == {"ambiguous_schema": 7}
    with pytest.raises(PredictInputError, match="--schemas: LSST schema folder .* does not exist"):
        load_model(export, survey="lsst", schemas=tmp_path / "nowhere")
    with pytest.raises(PredictInputError, match="use them with --survey lsst"):
        predict([str(wire)], export, tmp_path / "z.csv", progress=False, schemas=schemas)
