"""predict's fast decode: ZTF packets read with a projected reader schema (only the fields scoring reads) give
the full decode's features, triplets, rows and scores, bit for bit, on the real test packets."""

from __future__ import annotations

import copy
import io

import fastavro
import numpy as np
import pandas as pd
import pytest
from conftest import packet_paths, quick_run

from alertvision.data.features import BTSBOT_CUTS
from alertvision.data.ingest.avro import read_avro, read_packet_file
from alertvision.data.ingest.packets import candidate_row, packet_features
from alertvision.data.triplet import triplet_from_alert
from alertvision.deploy.export import export_run
from alertvision.deploy.predict import predict
from alertvision.surveys.ztf import PACKET_FIELDS, projected_schema


def _records() -> tuple[dict, list[dict]]:
    schema, records = None, []
    for path in packet_paths():
        with open(path, "rb") as fh:
            reader = fastavro.reader(fh)
            schema = schema or reader.writer_schema
            records.extend(reader)
    return schema, records


def _scoring_inputs(packet: dict) -> tuple:
    c = packet["candidate"]
    return (
        candidate_row(packet),
        packet_features(packet).tobytes(),
        triplet_from_alert(packet).tobytes(),
        BTSBOT_CUTS.reason(c.get("isdiffpos"), c.get("fid"), c.get("sgscore1"), c.get("sgscore2"), c.get("programid")),
    )


def _packets(items) -> list[dict]:
    return [item[1] for item in items if isinstance(item, tuple)]


def test_projected_packets_score_as_fully_decoded_ones(tmp_path):
    """Row, features, triplet (bytes) and cuts of each real packet, decoded whole and projected; also from a
    deflate container of several packets (the block path) and a gzipped file."""
    full = [p for path in packet_paths() for p in _packets(read_packet_file(path))]
    fast = [p for path in packet_paths() for p in _packets(read_packet_file(path, projected_schema))]
    assert len(full) == len(fast) == 12
    for a, b in zip(full, fast):
        assert _scoring_inputs(a) == _scoring_inputs(b), a["objectId"]
        assert set(b) < set(a) and set(b["candidate"]) < set(a["candidate"])  # fields were left out
        assert all(set(p) == {"jd", "fid", "magpsf"} for p in b["prv_candidates"] or ())

    schema, records = _records()
    buf = io.BytesIO()
    fastavro.writer(buf, fastavro.parse_schema(schema), records, codec="deflate", sync_interval=200_000)
    many = _packets(read_avro(io.BytesIO(buf.getvalue()), "deflate", projected_schema))
    assert [_scoring_inputs(p) for p in many] == [_scoring_inputs(p) for p in full]
    import gzip

    zipped = tmp_path / "one.avro.gz"
    zipped.write_bytes(gzip.compress(packet_paths()[0].read_bytes()))
    assert [_scoring_inputs(p) for p in _packets(read_packet_file(zipped, projected_schema))] == [
        _scoring_inputs(full[0])
    ]


def test_the_projection_keeps_what_scoring_reads_by_place():
    schema, _ = _records()
    projected = projected_schema(schema)
    top = {f["name"]: f for f in projected["fields"]}
    assert set(top) == set(PACKET_FIELDS["alert"]) & {f["name"] for f in schema["fields"]}
    candidate = (
        next(t for t in top["candidate"]["type"] if isinstance(t, dict))
        if isinstance(top["candidate"]["type"], list)
        else top["candidate"]["type"]
    )
    assert {f["name"] for f in candidate["fields"]} == set(PACKET_FIELDS["candidate"])

    # a field scoring does not know is kept whole; a named record in two places keeps both places' fields
    extra = copy.deepcopy(schema)
    extra["fields"].append(
        {
            "name": "classifications",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "cls",
                    "fields": [{"name": "braai", "type": "double"}, {"name": "acai", "type": "double"}],
                },
            ],
            "default": None,
        }
    )
    shared = {
        "type": "record",
        "name": "alert",
        "namespace": "x",
        "fields": [
            {"name": "objectId", "type": "string"},
            {
                "name": "candidate",
                "type": {
                    "type": "record",
                    "name": "c",
                    "fields": [{"name": n, "type": "double"} for n in ("jd", "fid", "magpsf", "zzz")],
                },
            },
            {"name": "prv_candidates", "type": {"type": "array", "items": "c"}},
            {"name": "publisher", "type": "string"},
        ],
    }
    out = projected_schema(shared)
    assert [f["name"] for f in out["fields"]] == ["objectId", "candidate", "prv_candidates"]
    assert [f["name"] for f in out["fields"][1]["type"]["fields"]] == ["jd", "fid", "magpsf"]
    cls = {f["name"]: f for f in projected_schema(extra)["fields"]}["classifications"]
    assert [f["name"] for f in cls["type"][1]["fields"]] == ["braai", "acai"]


@pytest.fixture(scope="module")
def export_folder(tiny_datasets, quick_split_file, tmp_path_factory):
    """A multi-modal CNN trained for an epoch on the tiny synthetic dataset, and its export."""
    root = tmp_path_factory.mktemp("decode")
    run = quick_run(tiny_datasets, quick_split_file, root / "run", "cnn", "multimodal")
    export_run(run, tiny_datasets["ztf"], quick_split_file, root / "export")
    return root / "export"


@pytest.mark.parametrize("threads", [1, 2])
def test_predict_gives_the_same_rows_and_scores_with_the_projected_decode(export_folder, tmp_path, threads):
    """The real packets (and a repeat of one) through predict decoded whole and projected: equal outputs,
    scores included (the model sees bit-equal inputs in the same batches), and equal skip counts."""
    inputs = [*packet_paths(), packet_paths()[0]]
    reports = {}
    for project in (False, True):
        reports[project] = predict(
            inputs, export_folder, tmp_path / f"{project}.parquet", progress=False, threads=threads, project=project
        )
    full, fast = (pd.read_parquet(tmp_path / f"{p}.parquet") for p in (False, True))
    assert len(full) == 12 and reports[True]["skipped"] == reports[False]["skipped"] == {"duplicate_alert": 1}
    pd.testing.assert_frame_equal(full, fast, check_exact=True)
    assert np.isfinite(fast["score"]).all()
