"""Rubin/LSST alerts through the pipeline: the avro source reads the 7 real Rubin alerts
(tests/data/lsst_alerts) with a labels table keyed by diaObjectId into the data contract, a CNN trains on
them for one epoch on the CPU, the export names LSST and carries the plugin's survey block, and
``alertvision predict --survey lsst`` scores the packets (container and wire framing, file, folder, tar and
stdin) as the export's PyTorch and ONNX paths do, and refuses a model of the other survey.

The labels are MADE UP here (alternating 0/1 by diaObjectId): the test checks the plumbing, not a
classifier; nothing here is a science result."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import fastavro
import numpy as np
import pandas as pd
import pytest
from test_lsst import as_rubin, rubin_schema

from alertvision.config import model_spec, training_params, validate_config
from alertvision.data.contract import ContractError, open_dataset
from alertvision.data.ingest.labels import LabelsError
from alertvision.data.sources import ingest_ztf
from alertvision.deploy.export import export_run, torch_logits
from alertvision.deploy.predict import PredictInputError, _check_inputs, load_model, predict
from alertvision.models import load_model as load_torch_model
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
            "data": {
                "source": "avro",
                "survey": "lsst",
                "avro": {"path": str(packets), "labels": str(labels)},
                "lsst": lsst,
            },
            "splits": {"probabilities": [0.5, 0.25, 0.25]},
            "grid": {"datasets": ["ztf"]},
        }
    )


@pytest.fixture(scope="module")
def lsst_run(tmp_path_factory):
    """The dataset, a one-epoch CNN run on it and its export."""
    from alertvision.training.loop import train_run

    root = tmp_path_factory.mktemp("lsst")
    config = _config(REAL.parent, _labels(root / "labels.csv"))
    manifest = ingest_ztf(config, root / "data", progress=False)
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
    info = {"arch": "cnn", "modality": "image", "regimen": "none", "fraction": "100", "seed": 0, "dataset": "ztf"}
    train_run(
        root / "data",
        split,
        root / "run",
        arch_cfg=model_spec(config, "cnn", "image"),
        training=training,
        seed=0,
        run_info=info,
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
        ingest_ztf(_config(REAL.parent, bad), tmp_path / "data", progress=False)
    # a diaObjectId no packet has: nothing survives, and the error says what was skipped
    pd.DataFrame({"diaObjectId": [12345], "label": [1], "source_set": ["all"]}).to_parquet(tmp_path / "l.parquet")
    with pytest.raises(ContractError, match="no alert of the 1 labelled diaObjects.*unlabelled_source"):
        ingest_ztf(_config(REAL.parent, tmp_path / "l.parquet"), tmp_path / "data", progress=False)


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
