"""data.source avro: the real packets, archives, corrupt packets and stamps, labels, derived features."""

from __future__ import annotations

import gzip
import io
import json
import logging
import shutil
import tarfile
from pathlib import Path

import fastavro
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from conftest import packet_paths

from alertvision.config import ConfigError, validate_config
from alertvision.data.contract import open_dataset
from alertvision.data.ingest.avro import AvroInputError, ingest_avro, iter_packets
from alertvision.data.ingest.labels import LabelsError
from alertvision.data.ingest.packets import InputReport, Skip
from alertvision.data.sources import ingest_ztf
from alertvision.data.triplet import decode_stamp, triplet_from_alert

SPLITS = [0.5, 0.25, 0.25]


def _schema() -> dict:
    with open(packet_paths()[0], "rb") as fh:
        return fastavro.reader(fh).writer_schema


def _write_packet(path: Path, packet: dict) -> Path:
    with open(path, "wb") as fh:
        fastavro.writer(fh, _schema(), [packet])
    return path


def _stamp(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    fits.PrimaryHDU(array.astype(np.float32)).writeto(buf)
    return gzip.compress(buf.getvalue())


def _with_stamp(packet: dict, field: str, data: bytes) -> dict:
    return {**packet, field: {**packet[field], "stampData": data}}


def _labels(tmp_path: Path, object_ids, name: str = "labels.csv") -> Path:
    ids = sorted(set(object_ids))
    df = pd.DataFrame(
        {
            "objectId": ids,
            "label": [i % 2 for i in range(len(ids))],
            "source_set": ["trues" if i % 2 else "rejects" for i in range(len(ids))],
        }
    )
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def _config(path, labels) -> dict:
    return validate_config(
        {
            "data": {"source": "avro", "avro": {"path": path, "labels": str(labels)}},
            "splits": {"probabilities": SPLITS},
            "grid": {"datasets": ["ztf"]},
        }
    )


def test_real_packets_become_the_contract(tmp_path, packets):
    labels = _labels(tmp_path, [p["objectId"] for p in packets])
    manifest = ingest_ztf(_config(str(packet_paths()[0].parent), labels), tmp_path / "ztf", progress=False)
    data = open_dataset(tmp_path / "ztf")
    assert manifest["source"] == "avro" and manifest["synthetic"] is False
    assert manifest["n_alerts"] == 12 and manifest["n_sources"] == 11 and manifest["skipped"] == {}
    assert "drb" in " ".join(manifest["notes"])
    by_candid = {p["candid"]: p for p in packets}
    for i, row in data.alerts.iterrows():
        np.testing.assert_array_equal(data.images[i], triplet_from_alert(by_candid[row["candid"]]))
        assert row["magpsf"] == pytest.approx(by_candid[row["candid"]]["candidate"]["magpsf"])
        assert row["new_drb"] == pytest.approx(by_candid[row["candid"]]["candidate"]["drb"])
    truth = pd.read_csv(labels).set_index("objectId")
    assert (data.alerts["label"].to_numpy() == truth.loc[data.alerts["objectId"], "label"].to_numpy()).all()


def test_derived_features_reach_back_through_prv_candidates(tmp_path, packets):
    """An alert's peak and first detection come from its prv_candidates too, never from later alerts."""
    labels = _labels(tmp_path, [p["objectId"] for p in packets])
    ingest_avro(_config(str(packet_paths()[0].parent), labels), tmp_path / "ztf", progress=False)
    alerts = open_dataset(tmp_path / "ztf").alerts.set_index("candid")
    for packet in packets:
        c = packet["candidate"]
        dets = [p for p in packet["prv_candidates"] or [] if p["magpsf"] is not None and p["jd"] <= c["jd"]]
        mags = [p["magpsf"] for p in dets] + [c["magpsf"]]
        first = min([p["jd"] for p in dets] + [c["jd"], c["jdstarthist"]])
        row = alerts.loc[packet["candid"]]
        assert row["peakmag_so_far"] == pytest.approx(min(mags), abs=1e-4)
        assert row["maxmag_so_far"] == pytest.approx(max(mags), abs=1e-4)
        assert row["age"] == pytest.approx(c["jd"] - first, abs=1e-3)
        assert row["nnotdet"] == c["ncovhist"] - c["ndethist"]
    # ZTF20aajcdad has two alerts: the second's history includes the first, not the reverse
    two = alerts[alerts["objectId"] == "ZTF20aajcdad"].sort_values("jd")
    assert len(two) == 2 and two["peakmag_so_far"].iloc[1] <= two["peakmag_so_far"].iloc[0]


def test_corrupt_packets_and_stamps_are_skipped_counted_and_named(tmp_path, packets, caplog):
    src = tmp_path / "packets"
    src.mkdir()
    for path in packet_paths():
        shutil.copy(path, src / path.name)
    base = packets[0]
    good = decode_stamp(base["cutoutScience"]["stampData"])
    # a truncated file, a bad gzip, a 52x63 stamp (padded, kept), an all-NaN stamp; each a new alert
    raw = src / "x_truncated.avro"
    _write_packet(raw, {**base, "objectId": "ZTF99trunc", "candid": 1})
    raw.write_bytes(raw.read_bytes()[: len(raw.read_bytes()) // 2])
    _write_packet(
        src / "x_badgzip.avro",
        _with_stamp({**base, "objectId": "ZTF99badgz", "candid": 2}, "cutoutScience", b"\x1f\x8b not really gzip"),
    )
    _write_packet(
        src / "x_short.avro",
        _with_stamp({**base, "objectId": "ZTF99short", "candid": 3}, "cutoutDifference", _stamp(good[:52, :])),
    )
    _write_packet(
        src / "x_nan.avro",
        _with_stamp({**base, "objectId": "ZTF99nan", "candid": 4}, "cutoutTemplate", _stamp(np.full((63, 63), np.nan))),
    )
    ids = [p["objectId"] for p in packets] + ["ZTF99trunc", "ZTF99badgz", "ZTF99short", "ZTF99nan"]
    labels = _labels(tmp_path, ids)
    with caplog.at_level(logging.WARNING):
        manifest = ingest_avro(_config(str(src), labels), tmp_path / "ztf", progress=False)
    assert manifest["skipped"] == {"corrupt_packet": 1, "stamp_bad_gzip": 1, "stamp_all_nan": 1}
    assert manifest["labelled_sources_without_alerts"] == 3
    alerts = open_dataset(tmp_path / "ztf").alerts
    assert "ZTF99short" in set(alerts["objectId"]) and len(alerts) == 13
    short = open_dataset(tmp_path / "ztf").images[int(np.flatnonzero(alerts["objectId"] == "ZTF99short")[0])]
    assert (short[2, 52:, :] == 0).all() and np.abs(short[2, :52]).sum() > 0
    logged = caplog.text
    assert "x_truncated.avro" in logged and "ZTF99badgz" in logged and "ZTF99nan" in logged


def _split(items) -> tuple[list, list[Skip], list[InputReport]]:
    """Packets, skips and archive reports of a packet stream."""
    items = list(items)
    return (
        [i for i in items if isinstance(i, tuple)],
        [i for i in items if isinstance(i, Skip)],
        [i for i in items if isinstance(i, InputReport)],
    )


def test_archives_stream_and_a_broken_archive_is_counted(tmp_path, packets):
    archive = tmp_path / "ztf_public_20200202.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in packet_paths():
            tar.add(path, arcname=path.name)
    found, skips, reports = _split(iter_packets(archive))
    assert len(found) == 12 and not skips and all(origin.startswith(str(archive)) for origin, _ in found)
    assert [r.origin for r in reports] == [str(archive)] and reports[0].counts["members_read"] == 12
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    found, skips, reports = _split(iter_packets(broken))
    assert len(skips) == 1 and skips[0].reason == "corrupt_archive" and 0 < len(found) < 12
    assert "truncated" in skips[0].detail and reports[0].counts["members_damaged"] == 1


def test_a_garbled_archive_keeps_the_packets_after_the_damage_and_counts_it(tmp_path, packets, caplog):
    """2,000 bytes garbled over a tar header mid-archive: that packet is lost, counted and named; every
    other packet, before and after, is kept, and the manifest says what the archive lost."""
    archive = tmp_path / "night.tar"
    with tarfile.open(archive, "w", format=tarfile.USTAR_FORMAT) as tar:
        for path in packet_paths():
            tar.add(path, arcname=f"night/{path.name}")
    with tarfile.open(archive) as tar:
        infos = tar.getmembers()
    data = bytearray(archive.read_bytes())
    start = infos[5].offset  # from the sixth header on: the packets before it stay whole
    data[start : start + 2000] = np.random.default_rng(5).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    archive.write_bytes(bytes(data))
    found, skips, _ = _split(iter_packets(archive))
    assert sorted(origin for origin, _ in found) == sorted(f"{archive}:{m.name}" for i, m in enumerate(infos) if i != 5)
    assert [(s.reason, s.origin) for s in skips] == [("corrupt_archive", f"{archive}@{infos[5].offset}")]
    labels = _labels(tmp_path, [p["objectId"] for p in packets])
    with caplog.at_level(logging.WARNING):
        manifest = ingest_avro(_config(str(archive), labels), tmp_path / "ztf", progress=False)
    assert manifest["skipped"]["corrupt_archive"] == 1 and manifest["n_alerts"] == 11
    lost = infos[6].offset - infos[5].offset
    assert manifest["archives_read"] == {
        str(archive): {
            "members_read": 11,
            "members_damaged": 0,
            "bad_headers": 1,
            "damaged_regions": 1,
            "bytes_unreadable": lost,
            "tar_bytes_unreadable": lost,
        }
    }
    assert f"{archive}@{infos[5].offset}" in caplog.text and "is damaged" in caplog.text


def test_duplicates_and_unlabelled_sources_are_counted(tmp_path, packets):
    archive = tmp_path / "night.tar"
    with tarfile.open(archive, "w") as tar:
        for path in packet_paths():
            tar.add(path, arcname=f"night/{path.name}")
    keep = sorted({p["objectId"] for p in packets})[:6]
    labels = _labels(tmp_path, keep)
    cfg = _config([str(packet_paths()[0].parent), str(archive)], labels)
    manifest = ingest_avro(cfg, tmp_path / "ztf", progress=False)
    n_kept = sum(p["objectId"] in keep for p in packets)
    assert manifest["n_alerts"] == n_kept
    assert manifest["skipped"] == {"duplicate_alert": n_kept, "unlabelled_source": 2 * (12 - n_kept)}


def test_rerun_gives_the_same_dataset(tmp_path, packets):
    labels = _labels(tmp_path, [p["objectId"] for p in packets])
    cfg = _config(str(packet_paths()[0].parent), labels)
    ingest_avro(cfg, tmp_path / "a", progress=False)
    ingest_avro(cfg, tmp_path / "b", progress=False)
    a, b = open_dataset(tmp_path / "a"), open_dataset(tmp_path / "b")
    pd.testing.assert_frame_equal(a.alerts, b.alerts)
    np.testing.assert_array_equal(a.images, b.images)
    ma, mb = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in "ab")
    assert ma["config_digest"] == mb["config_digest"]


def test_bad_inputs_fail_with_the_key_to_fix(tmp_path, packets):
    labels = _labels(tmp_path, [p["objectId"] for p in packets])
    with pytest.raises(AvroInputError, match="data.avro.path"):
        ingest_avro(_config(str(tmp_path / "nowhere"), labels), tmp_path / "ztf", progress=False)
    bad = tmp_path / "bad_labels.csv"
    pd.DataFrame({"objectId": ["ZTF20aaelulu"], "label": [2], "source_set": ["trues"]}).to_csv(bad, index=False)
    with pytest.raises(LabelsError, match="ZTF20aaelulu.*0 or 1"):
        ingest_avro(_config(str(packet_paths()[0].parent), bad), tmp_path / "ztf", progress=False)
    pd.DataFrame({"objectId": ["ZTF20aaelulu"], "label": [1]}).to_csv(bad, index=False)
    with pytest.raises(LabelsError, match="source_set"):
        ingest_avro(_config(str(packet_paths()[0].parent), bad), tmp_path / "ztf", progress=False)
    with pytest.raises(ConfigError, match="data.avro"):
        validate_config({"data": {"source": "avro"}})
    assert not (tmp_path / "ztf" / "manifest.json").exists()


def _subset_labels(tmp_path: Path, subsets: dict[str, str], rows: list[tuple] = ()) -> Path:
    """A labels table giving each object the subset named (label 1 for trues), plus extra raw rows."""
    df = pd.DataFrame(
        [{"objectId": o, "label": int(s == "trues"), "source_set": s} for o, s in subsets.items()]
        + [dict(zip(("objectId", "label", "source_set"), r)) for r in rows]
    )
    path = tmp_path / "labels.csv"
    df.to_csv(path, index=False)
    return path


def test_dims_that_peaked_brighter_than_18_5_are_cut_and_the_images_follow(tmp_path, packets):
    subsets = {p["objectId"]: "rejects" for p in packets}
    subsets.update({"ZTF20aaelulu": "dims", "ZTF20aafsnpp": "dims", "ZTF20aahgyet": "dims"})  # 14.92, 18.22, 19.96
    cfg = _config(str(packet_paths()[0].parent), _subset_labels(tmp_path, subsets))
    manifest = ingest_avro(cfg, tmp_path / "ztf", progress=False)
    assert manifest["dims_cut"] == {"limit": 18.5, "sources": 2, "alerts": 2}
    data = open_dataset(tmp_path / "ztf")
    assert len(data.alerts) == 10 and not {"ZTF20aaelulu", "ZTF20aafsnpp"} & set(data.alerts["objectId"])
    assert "ZTF20aahgyet" in set(data.alerts["objectId"]) and manifest["labelled_sources_without_alerts"] == 0
    by_candid = {p["candid"]: p for p in packets}
    for i, row in data.alerts.iterrows():
        np.testing.assert_array_equal(data.images[i], triplet_from_alert(by_candid[row["candid"]]))
    cfg["data"]["avro"]["dims_peak_limit"] = None
    manifest = ingest_avro(cfg, tmp_path / "all", progress=False)
    assert manifest["dims_cut"]["alerts"] == 0 and manifest["n_alerts"] == 12


def test_history_alerts_leaves_prv_candidates_out(tmp_path, packets):
    labels = _labels(tmp_path, [p["objectId"] for p in packets])
    cfg = _config(str(packet_paths()[0].parent), labels)
    cfg["data"]["avro"]["history"] = "alerts"
    manifest = ingest_avro(cfg, tmp_path / "ztf", progress=False)
    assert manifest["history"] == "alerts"
    alerts = open_dataset(tmp_path / "ztf").alerts.set_index("candid")
    for packet in packets:
        own = [
            q["candidate"]
            for q in packets
            if q["objectId"] == packet["objectId"] and q["candidate"]["jd"] <= packet["candidate"]["jd"]
        ]
        row = alerts.loc[packet["candid"]]
        assert row["peakmag_so_far"] == pytest.approx(min(c["magpsf"] for c in own), abs=1e-4)
        first = min([c["jd"] for c in own] + [packet["candidate"]["jdstarthist"]])
        assert row["age"] == pytest.approx(packet["candidate"]["jd"] - first, abs=1e-3)
    # ZTF20aaelulu's prv_candidates reach 14.77, its own alert 14.92: only the default history sees the former
    assert alerts.set_index("objectId").loc["ZTF20aaelulu", "peakmag_so_far"] == pytest.approx(14.92, abs=0.01)


def test_an_object_in_several_subsets_keeps_btsbot_s_first_and_is_counted(tmp_path, packets):
    subsets = {p["objectId"]: "rejects" for p in packets}
    rows = [
        ("ZTF20aaelulu", 1, "trues"),
        ("ZTF20aaelulu", 0, "dims"),  # listed three times: trues wins
        ("ZTF20aahgyet", 0, "vars"),  # rejects and vars: vars wins
        ("ZTF20aafcnby", 0, "rejects"),
    ]  # the same row twice
    cfg = _config(str(packet_paths()[0].parent), _subset_labels(tmp_path, subsets, rows))
    manifest = ingest_avro(cfg, tmp_path / "ztf", progress=False)
    assert manifest["labels"]["repeated_rows"] == 1 and manifest["labels"]["in_several_subsets"] == 2
    assert manifest["labels"]["in_several_subsets_first"] == [
        "ZTF20aaelulu: trues > dims > rejects",
        "ZTF20aahgyet: vars > rejects",
    ]
    alerts = open_dataset(tmp_path / "ztf").alerts.groupby("objectId")[["source_set", "label"]].first()
    assert tuple(alerts.loc["ZTF20aaelulu"]) == ("trues", 1) and tuple(alerts.loc["ZTF20aahgyet"]) == ("vars", 0)
    bad = _subset_labels(tmp_path, subsets, [("ZTF20aafcnby", 1, "rejects")])  # two labels in one subset
    with pytest.raises(LabelsError, match="different labels in the same subset, e.g. ZTF20aafcnby"):
        ingest_avro(_config(str(packet_paths()[0].parent), bad), tmp_path / "bad", progress=False)


def test_masked_pixels_follow_data_masked_pixels(tmp_path, packets):
    """A thirteenth alert whose template holds ZTF's masked value: dropped and counted by default, kept with
    those pixels at 0 under ``data.masked_pixels: zero``."""
    folder = tmp_path / "packets"
    folder.mkdir()
    for path in packet_paths():
        shutil.copy(path, folder / path.name)
    template = decode_stamp(packets[0]["cutoutTemplate"]["stampData"]).copy()
    template[50:, :20] = np.float32(-3.4e38)
    masked = _with_stamp(packets[0], "cutoutTemplate", _stamp(template))
    masked["candid"] += 1
    masked["candidate"] = {**masked["candidate"], "candid": masked["candid"], "jd": masked["candidate"]["jd"] + 0.01}
    _write_packet(folder / "masked.avro", masked)
    labels = _labels(tmp_path, [p["objectId"] for p in packets])

    manifest = ingest_ztf(_config(str(folder), labels), tmp_path / "drop", progress=False)
    assert manifest["n_alerts"] == 12 and manifest["skipped"] == {"stamp_masked_pixels": 1}
    assert manifest["masked_pixels"] == "drop"

    config = _config(str(folder), labels)
    config["data"]["masked_pixels"] = "zero"
    manifest = ingest_ztf(config, tmp_path / "zero", progress=False)
    assert manifest["n_alerts"] == 13 and manifest["skipped"] == {} and manifest["masked_pixels"] == "zero"
    data = open_dataset(tmp_path / "zero")
    row = int(np.flatnonzero(data.alerts["candid"].to_numpy() == masked["candid"])[0])
    assert (data.images[row, 1, 50:, :20] == 0).all() and np.linalg.norm(data.images[row, 1]) == pytest.approx(1.0)
