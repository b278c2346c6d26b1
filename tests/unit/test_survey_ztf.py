"""The ZTF survey plugin wraps today's functions: on the 12 real packets its triplets, features, cuts and ids
equal theirs bit for bit, and a ZTF dataset is byte-identical whether or not the study has a Rubin/LSST dataset
beside it and whatever its settings (``data.lsst``; the code path every ZTF dataset took before the plugin existed)."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from conftest import packet_paths

from alertvision.config import validate_config
from alertvision.data.contract import open_dataset
from alertvision.data.features import BTSBOT_CUTS, METADATA_FEATURES, Cuts
from alertvision.data.ingest.avro import read_avro
from alertvision.data.ingest.packets import packet_features
from alertvision.data.sources import ingest_ztf
from alertvision.data.triplet import triplet_from_alert
from alertvision.surveys import SURVEYS, get_survey, survey_of_config
from alertvision.surveys.ztf import ZtfSurvey


def test_the_plugin_equals_the_functions_on_the_real_packets(packets):
    survey = get_survey("ztf")
    assert isinstance(survey, ZtfSurvey) and survey.feature_names == METADATA_FEATURES
    for packet in packets:
        np.testing.assert_array_equal(survey.triplet(packet), triplet_from_alert(packet))
        assert survey.triplet(packet).tobytes() == triplet_from_alert(packet).tobytes()
        assert survey.features(packet).tobytes() == packet_features(packet).tobytes()
        c = packet["candidate"]
        assert survey.failed_cut(packet) == BTSBOT_CUTS.reason(
            c["isdiffpos"], c["fid"], c["sgscore1"], c["sgscore2"], c["programid"]
        )
        assert survey.alert_id(packet) == packet["candid"] and survey.source_id(packet) == packet["objectId"]


def test_the_plugin_reads_and_processes_packets_as_the_avro_reader(packets):
    survey = get_survey("ztf", {"cuts": {"programids": [1, 2]}, "masked_pixels": "zero"})
    assert survey.cuts == Cuts((1, 2)) and survey.masked_pixels == "zero"
    items, expected = [], []
    for path in packet_paths():
        data = path.read_bytes()
        items += list(survey.read(data, str(path)))
        with open(path, "rb") as fh:
            expected += [r for _, r in read_avro(fh, str(path))]
    assert [r["candid"] for _, r in items] == [r["candid"] for r in expected]
    skipped: Counter = Counter()
    inputs = list(survey.process(items, skipped, cuts=False))
    assert len(inputs) + sum(skipped.values()) == len(items) == 12
    by_candid = {p["candid"]: p for p in packets}
    for alert in inputs:
        np.testing.assert_array_equal(alert.image, triplet_from_alert(by_candid[alert.alert_id], "zero"))


def test_a_damaged_container_is_a_skip_through_the_plugin():
    survey = get_survey("ZTF")
    data = packet_paths()[0].read_bytes()
    items = list(survey.read(data[: len(data) // 2], "half.avro"))
    assert [i.reason for i in items if not isinstance(i, tuple)] == ["corrupt_packet"]


def test_the_survey_block_names_ztf_and_its_features():
    block = get_survey("ztf").survey_block()
    assert block["survey"] == "ztf" and [f["name"] for f in block["metadata_features"]] == list(METADATA_FEATURES)
    assert block["triplet"]["size"] == 63 and block["triplet"]["channels"] == ["science", "reference", "difference"]
    assert block["ids"] == {"alert": "candid", "source": "objectId"}
    assert set(SURVEYS) == {"ztf", "lsst"}
    with pytest.raises(ValueError, match="'decam' is not one of lsst, ztf"):
        get_survey("decam")


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_ztf_dataset_is_byte_identical_with_and_without_an_lsst_dataset_beside_it(tmp_path, packets):
    ids = sorted({p["objectId"] for p in packets})
    labels = tmp_path / "labels.csv"
    pd.DataFrame(
        {"objectId": ids, "label": [i % 2 for i in range(len(ids))], "source_set": ["trues", "rejects"] * 5 + ["dims"]}
    ).to_csv(labels, index=False)
    data = {"source": "avro", "avro": {"path": str(packet_paths()[0].parent), "labels": str(labels)}}
    manifests = {}
    lsst = {"lsst": {"source": "synthetic", "triplet": {"size": 31}}}
    for name, extra, datasets in (("before", {}, ["ztf"]), ("after", lsst, ["ztf", "lsst"])):
        config = validate_config(
            {"data": {**data, **extra}, "splits": {"probabilities": [0.5, 0.25, 0.25]}, "grid": {"datasets": datasets}}
        )
        assert survey_of_config(config).name == "ztf"
        manifests[name] = ingest_ztf(config, tmp_path / name, progress=False)
    for file in ("alerts.parquet", "images.npy"):
        assert _digest(tmp_path / "before" / file) == _digest(tmp_path / "after" / file)
    strip = {"created", "inputs"}
    assert {k: v for k, v in manifests["before"].items() if k not in strip} == {
        k: v for k, v in manifests["after"].items() if k not in strip
    }
    assert manifests["after"]["survey"] == "ztf"
    # and each stored row is what the plugin makes of its packet
    ds = open_dataset(tmp_path / "after")
    by_candid = {p["candid"]: p for p in packets}
    survey = get_survey("ztf")
    for i, row in ds.alerts.iterrows():
        assert ds.images[i].tobytes() == survey.triplet(by_candid[row["candid"]]).tobytes()
