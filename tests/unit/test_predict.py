"""`alertvision predict` on the twelve real packets: the pipeline's own scores, every input form, the
policies as the study evaluates them, and packets that cannot be scored counted, never a crash."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile

import fastavro
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import packet_paths, quick_run

from alertvision.config import validate_config
from alertvision.data.contract import open_dataset
from alertvision.data.features import METADATA_FEATURES
from alertvision.data.ingest.packets import packet_features
from alertvision.data.sources import ingest_ztf
from alertvision.deploy.calibration import sigmoid
from alertvision.deploy.export import export_run, onnx_logits, torch_logits
from alertvision.deploy.predict import SCORE_COLUMNS, PolicyTracker, PredictInputError, predict
from alertvision.evaluation.policies import POLICIES, _fires
from alertvision.models import model_from_payload
from alertvision.models.onnx import ort_session

#: The issue's bound: predict's scores equal the pipeline's own path's.
AGREEMENT = 1e-6


def _schema() -> dict:
    with open(packet_paths()[0], "rb") as fh:
        return fastavro.reader(fh).writer_schema


@pytest.fixture(scope="module")
def exported(tiny_datasets, quick_split_file, tmp_path_factory):
    """A multi-modal CNN trained for an epoch on the tiny synthetic dataset, and its export."""
    root = tmp_path_factory.mktemp("predict")
    run = quick_run(tiny_datasets, quick_split_file, root / "run", "cnn", "multimodal")
    export_run(run, tiny_datasets["ztf"], quick_split_file, root / "export")
    return {"run": run, "export": root / "export"}


@pytest.fixture(scope="module")
def ingested(packets, tmp_path_factory):
    """The pipeline's own path: the twelve real packets through the avro ingest (every source labelled)."""
    root = tmp_path_factory.mktemp("ingest")
    ids = sorted({p["objectId"] for p in packets})
    labels = root / "labels.csv"
    pd.DataFrame({"objectId": ids, "label": 1, "source_set": "trues"}).to_csv(labels, index=False)
    config = validate_config(
        {
            "data": {"source": "avro", "avro": {"path": str(packet_paths()[0].parent), "labels": str(labels)}},
            "grid": {"datasets": ["ztf"]},
        }
    )
    ingest_ztf(config, root / "ztf", progress=False)
    return open_dataset(root / "ztf")


def _pipeline_logits(data, scorer) -> pd.Series:
    rows = np.arange(len(data.alerts))
    metadata = data.alerts[list(METADATA_FEATURES)].to_numpy(np.float32)
    return pd.Series(scorer(data.images, metadata, rows), index=data.alerts["candid"].to_numpy())


def test_features_from_a_packet_equal_the_ingested_ones(packets, ingested):
    by_candid = ingested.alerts.set_index("candid")
    for packet in packets:
        stored = by_candid.loc[packet["candid"], list(METADATA_FEATURES)].to_numpy(np.float32)
        np.testing.assert_array_equal(packet_features(packet), stored, err_msg=packet["objectId"])


def test_predict_scores_as_the_pipeline_does_on_the_real_packets(exported, ingested, tmp_path):
    model, _ = model_from_payload(torch.load(exported["run"] / "model.pt", weights_only=True), "model.pt")
    session = ort_session(exported["export"] / "model.onnx")
    for model_path, scorer in [
        (exported["run"] / "model.pt", lambda im, md, rows: torch_logits(model, im, md, rows)),
        (exported["export"], lambda im, md, rows: onnx_logits(session, im, md, rows)),
    ]:
        out = tmp_path / f"{model_path.name}.parquet"
        report = predict([packet_paths()[0].parent], model_path, out, progress=False)
        got = pd.read_parquet(out).set_index("candid")
        assert report["alerts_scored"] == len(got) == 12 and report["skipped"] == {}
        expected = sigmoid(_pipeline_logits(ingested, scorer).loc[got.index].to_numpy())
        assert np.max(np.abs(got["score"].to_numpy() - expected)) <= AGREEMENT, model_path
    # the ONNX file's calibration is applied; a model.pt has none
    assert not np.allclose(got["calibrated_score"], got["score"])


def test_archives_stdin_and_a_folder_give_the_same_rows(exported, tmp_path):
    folder = tmp_path / "folder.parquet"
    predict([packet_paths()[0].parent], exported["export"], folder, progress=False)
    archive = tmp_path / "night.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in packet_paths():
            tar.add(path, arcname=f"20200202/{path.name}")
    from_archive = tmp_path / "archive.csv"
    predict([archive], exported["export"], from_archive, progress=False, threads=2, batch_size=5)

    stream = io.BytesIO()
    records = [r for p in packet_paths() for r in fastavro.reader(open(p, "rb"))]
    fastavro.writer(stream, _schema(), records)
    from_stdin = tmp_path / "stdin.parquet"
    cli = [sys.executable, "-m", "alertvision", "predict", "-q", "-", "--model", str(exported["export"])]
    done = subprocess.run([*cli, "--out", str(from_stdin)], input=stream.getvalue(), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert b"12 alerts scored" in done.stdout

    reference = pd.read_parquet(folder)
    for other in (pd.read_csv(from_archive), pd.read_parquet(from_stdin)):
        other = other.set_index("candid").loc[reference["candid"]].reset_index()[reference.columns]
        pd.testing.assert_frame_equal(other, reference, check_dtype=False, atol=1e-6)


def test_packets_that_cannot_be_scored_are_counted_by_reason(exported, packets, tmp_path):
    good, bad_stamp, no_candidate = packets[0], dict(packets[1]), dict(packets[2])
    bad_stamp["cutoutScience"] = {**bad_stamp["cutoutScience"], "stampData": gzip.compress(b"not a FITS file")}
    folder = tmp_path / "packets"
    folder.mkdir()
    for name, packet in [("good", good), ("bad_stamp", bad_stamp)]:
        with open(folder / f"{name}.avro", "wb") as fh:
            fastavro.writer(fh, _schema(), [packet])
    (folder / "truncated.avro").write_bytes(packet_paths()[3].read_bytes()[:3000])
    (folder / "garbage.avro").write_bytes(b"\x00" * 100)
    out = tmp_path / "out.parquet"
    report = predict([folder], exported["export"], out, progress=False)
    assert report["alerts_scored"] == 1 and pd.read_parquet(out)["candid"].tolist() == [good["candid"]]
    assert report["skipped"] == {"corrupt_packet": 2, "stamp_bad_fits": 1}
    del no_candidate  # the schema requires a candidate: a packet without one cannot be written to Avro


def test_nothing_is_written_when_an_input_is_missing(exported, tmp_path):
    out = tmp_path / "out.parquet"
    with pytest.raises(PredictInputError, match="does not exist"):
        predict([tmp_path / "nowhere"], exported["export"], out, progress=False)
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))
    with pytest.raises(PredictInputError, match=r"\.parquet or \.csv"):
        predict([packet_paths()[0]], exported["export"], tmp_path / "out.json", progress=False)
    with pytest.raises(PredictInputError, match="not found"):
        predict([packet_paths()[0]], tmp_path / "no-model", out, progress=False)


def test_recommended_thresholds_come_from_the_export(exported, tmp_path):
    import json

    out = tmp_path / "out.parquet"
    predict([packet_paths()[0].parent], exported["export"], out, progress=False, thresholds="recommended")
    frame = pd.read_parquet(out)
    assert [c for c in frame.columns if c.startswith("trigger_")] == [f"trigger_{p}" for p in POLICIES]
    meta = ort_session(exported["export"] / "model.onnx").get_modelmeta().custom_metadata_map
    chosen = json.loads(meta["alertvision.thresholds"])["policies"]["prod_p1"]["max_f1"]["threshold"]
    # prod_p1 fires at the first alert with a calibrated score above its threshold and magpsf < 19
    expected = (frame["calibrated_score"] > chosen) & (frame["magpsf"] < 19) & frame["passes_cuts"]
    first = expected.groupby(frame["objectId"]).cummax()
    assert frame["trigger_prod_p1"].tolist() == first.tolist()


def test_the_policy_tracker_fires_as_the_study_evaluates_the_policies():
    rng = np.random.default_rng(0)
    n = 400
    sources = rng.integers(0, 30, n)
    frame = pd.DataFrame(
        {"objectId": [f"ZTF{s:02d}" for s in sources], "jd": rng.random(n), "score": rng.random(n)}
    ).assign(magpsf=rng.uniform(17.5, 20, n), counted=rng.random(n) > 0.1)
    frame = frame.sort_values(["jd"]).reset_index(drop=True)  # arrival order: by time
    tracker = PolicyTracker({name: (policy, "score") for name, policy in POLICIES.items()})
    flags = tracker.flags(
        frame["objectId"].tolist(), frame["magpsf"].to_numpy(), frame["counted"].to_numpy(), {"score": frame["score"]}
    )
    counted = frame[frame["counted"]].sort_values(["objectId", "jd"])
    codes = pd.factorize(counted["objectId"])[0]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    for name, policy in POLICIES.items():
        study = _fires(counted["score"].to_numpy(), counted["magpsf"].to_numpy(), starts, codes, policy)
        assert (flags[name][counted.index.to_numpy()] == study).all(), name
        assert not flags[name][~frame["counted"].to_numpy()].any()


# --- issue 27.2 / 28.5: predict never scores wrongly in silence -------------------------------------------


def _write(path, packets: list[dict], schema: dict | None = None):
    with open(path, "wb") as fh:
        fastavro.writer(fh, schema or _schema(), packets)
    return path


def _changed(packet: dict, name: str, candid: int, **candidate) -> dict:
    """A copy of a real packet as a new alert (objectId ZTF99<name>) with candidate fields changed."""
    cand = {**packet["candidate"], **candidate, "candid": candid}
    return {**packet, "objectId": f"ZTF99{name}", "candid": candid, "candidate": cand}


def _model_copy(exported, tmp_path, name: str, changes: dict | None = None, strip: bool = False):
    """A copy of the exported model.onnx with its metadata_props changed (a value None removes the key)."""
    import onnx

    proto = onnx.load(str(exported["export"] / "model.onnx"))
    props = {} if strip else {p.key: p.value for p in proto.metadata_props}
    for key, value in (changes or {}).items():
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value if isinstance(value, str) else json.dumps(value)
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    folder = tmp_path / name
    folder.mkdir()
    onnx.save(proto, str(folder / "model.onnx"))
    return folder / "model.onnx"


def test_a_repeated_packet_is_one_alert(exported, tmp_path):
    reference = tmp_path / "once.parquet"
    predict([packet_paths()[0].parent], exported["export"], reference, progress=False)
    twice = tmp_path / "twice.parquet"
    report = predict([packet_paths()[0].parent, packet_paths()[3]], exported["export"], twice, progress=False)
    assert report["alerts_scored"] == 12 and report["skipped"] == {"duplicate_alert": 1}
    # the repeat neither adds a row nor counts towards a policy a second time
    pd.testing.assert_frame_equal(pd.read_parquet(twice), pd.read_parquet(reference))


def test_concatenated_containers_on_stdin_are_all_read(exported, tmp_path):
    """Twelve packet files and a repeat of one, concatenated as `cat` writes them, through the real CLI."""
    stream = b"".join(p.read_bytes() for p in [*packet_paths(), packet_paths()[0]])
    out = tmp_path / "stdin.csv"
    cli = [sys.executable, "-m", "alertvision", "predict", "-q", "-", "--model", str(exported["export"])]
    done = subprocess.run([*cli, "--out", str(out)], input=stream, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert b"12 alerts scored" in done.stdout and b"skipped: duplicate_alert 1" in done.stdout
    assert b"trained on SYNTHETIC data" in done.stdout and b"trained on SYNTHETIC data" in done.stderr
    assert sorted(pd.read_csv(out)["candid"]) == sorted(int(p.stem) for p in packet_paths())


def test_a_missing_feature_is_filled_as_the_contract_says_or_counted_by_name(exported, packets, tmp_path):
    """An old-schema packet without drb (and no braai score): a model whose contract fills non-finite
    features (the tiny run's median fill, inside the graph) scores it; one whose contract fills none
    (metadata_fill: error) skips it under the feature's name. No row ever has a NaN score."""
    import copy

    schema = copy.deepcopy(_schema())
    candidate = next(f for f in schema["fields"] if f["name"] == "candidate")["type"]
    candidate["fields"] = [f for f in candidate["fields"] if f["name"] not in ("drb", "drbversion")]
    old = _changed(packets[1], "nodrb", 101)
    old["candidate"] = {k: v for k, v in old["candidate"].items() if k not in ("drb", "drbversion")}
    folder = tmp_path / "packets"
    folder.mkdir()
    _write(folder / "old.avro", [old], schema)
    _write(folder / "good.avro", [packets[0]])
    assert np.isnan(packet_features(old)[METADATA_FEATURES.index("new_drb")])
    out = tmp_path / "out.csv"
    meta = ort_session(exported["export"] / "model.onnx").get_modelmeta().custom_metadata_map
    fill = json.loads(meta["alertvision.metadata_fill"])
    assert fill["policy"] == "median" and len(fill["values"]) == len(METADATA_FEATURES)
    report = predict([folder], exported["export"], out, progress=False)
    assert report["alerts_scored"] == 2 and report["skipped"] == {}
    assert np.isfinite(pd.read_csv(out)[list(SCORE_COLUMNS)]).all().all()
    strict = _model_copy(
        exported, tmp_path, "strict", {"alertvision.metadata_fill": {"policy": "error", "values": None}}
    )
    report = predict([folder], strict, out, progress=False)
    assert report["alerts_scored"] == 1 and report["skipped"] == {"nonfinite_new_drb": 1}
    frame = pd.read_csv(out)
    assert frame["candid"].tolist() == [packets[0]["candid"]] and np.isfinite(frame[list(SCORE_COLUMNS)]).all().all()


def test_a_nan_jd_and_an_oversized_stamp_are_counted(exported, packets, tmp_path):
    from alertvision.data.triplet import MAX_STAMP_BYTES

    folder = tmp_path / "packets"
    folder.mkdir()
    _write(folder / "nanjd.avro", [_changed(packets[0], "nanjd", 201, jd=float("nan"))])
    bomb = _changed(packets[1], "bomb", 202)  # a few KB that decompress past the cap
    bomb["cutoutScience"] = {**bomb["cutoutScience"], "stampData": gzip.compress(bytes(MAX_STAMP_BYTES + 1))}
    _write(folder / "bomb.avro", [bomb])
    _write(folder / "good.avro", [packets[2]])
    assert (folder / "bomb.avro").stat().st_size < 200_000
    report = predict([folder], exported["export"], tmp_path / "out.parquet", progress=False)
    assert report["alerts_scored"] == 1 and report["skipped"] == {"bad_jd": 1, "stamp_too_large": 1}


@pytest.mark.parametrize(
    "changes, strip, message",
    [
        ({}, True, "carries no alertvision contract"),
        ({"alertvision.calibration": None}, False, "lacks alertvision.calibration"),
        ({"alertvision.survey": "LSST"}, False, "survey 'LSST'"),
        ({"alertvision.input_shapes": {"triplet": ["batch", 3, 64, 64], "metadata": ["batch", 25]}}, False, "shape"),
        ({"alertvision.metadata_features": list(reversed(METADATA_FEATURES))}, False, "metadata features"),
        ({"alertvision.inputs": ["triplet"]}, False, "the graph takes"),
    ],
)
def test_a_model_without_the_contract_is_refused_before_scoring(exported, tmp_path, changes, strip, message):
    model = _model_copy(exported, tmp_path, "model", changes, strip)
    out = tmp_path / "out.parquet"
    with pytest.raises(PredictInputError, match=message):
        predict([packet_paths()[0].parent], model, out, progress=False)
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_a_synthetic_model_warns_and_marks_every_row(exported, tmp_path, caplog):
    import logging

    out = tmp_path / "synthetic.parquet"
    with caplog.at_level(logging.WARNING):
        report = predict([packet_paths()[0].parent], exported["export"], out, progress=False)
    assert report["model_trained_on"] == "SYNTHETIC" and "trained on SYNTHETIC data" in caplog.text
    assert set(pd.read_parquet(out)["model_trained_on"]) == {"SYNTHETIC"}
    caplog.clear()
    real = _model_copy(exported, tmp_path, "real", {"alertvision.synthetic": False})
    with caplog.at_level(logging.WARNING):
        predict([packet_paths()[0].parent], real, out, progress=False)
    assert "SYNTHETIC" not in caplog.text and set(pd.read_parquet(out)["model_trained_on"]) == {"real"}


def test_the_cuts_come_with_the_model(exported, packets, tmp_path):
    meta = ort_session(exported["export"] / "model.onnx").get_modelmeta().custom_metadata_map
    cuts = json.loads(meta["alertvision.cuts"])
    assert {k: cuts[k] for k in ("programids", "isdiffpos")} == {
        "programids": [1],
        "isdiffpos": "btsbot",
    }  # the dataset's
    assert {"path": ["candidate", "isdiffpos"], "op": "in", "values": ["t"]} in cuts["all"]
    folder = tmp_path / "packets"
    folder.mkdir()
    _write(folder / "p3.avro", [_changed(packets[0], "p3", 301, programid=3)])
    _write(folder / "one.avro", [_changed(packets[1], "one", 302, isdiffpos="1")])
    _write(folder / "good.avro", [packets[2]])
    out = tmp_path / "out.csv"
    report = predict([folder], exported["export"], out, progress=False)
    assert report["cut"] == {"cut_isdiffpos_spelling": 1, "cut_programid": 1} and report["skipped"] == {}
    flags = pd.read_csv(out).set_index("candid")["passes_cuts"]
    assert flags.to_dict() == {301: False, 302: False, packets[2]["candid"]: True}
    lenient = _model_copy(
        exported, tmp_path, "lenient", {"alertvision.cuts": {"programids": [1, 3], "isdiffpos": "lenient"}}
    )
    report = predict([folder], lenient, out, progress=False)
    assert report["cut"] == {} and pd.read_csv(out)["passes_cuts"].all()


def test_the_output_is_checked_before_scoring_and_a_killed_runs_temporaries_go(exported, tmp_path, mounted_tmpfs):
    folder_out = tmp_path / "out.parquet"
    folder_out.mkdir()
    with pytest.raises(PredictInputError, match="is a folder"):
        predict([packet_paths()[0]], exported["export"], folder_out, progress=False)
    out = tmp_path / "preds.csv"
    stale = tmp_path / ".preds.csv.k1ll3d.csv.tmp"  # what atomic_path leaves when the run is killed
    stale.write_text("objectId,candid\n")
    predict([packet_paths()[0]], exported["export"], out, progress=False)
    assert not stale.exists() and len(pd.read_csv(out)) == 1
    readonly = mounted_tmpfs("ro", readonly=True)
    with pytest.raises(PermissionError, match="cannot write the predictions"):
        predict([packet_paths()[0]], exported["export"], readonly / "out.parquet", progress=False)
