"""The shared packet reader (the avro ingest's and predict's): every input read or refused by name, never
passed over: links to folders (with a cycle), Avro files compressed whole, .tar.bz2 / .tar.xz archives,
Avro containers one after another; non-finite jd and the packet cuts counted in the ingest."""

from __future__ import annotations

import bz2
import gzip
import io
import logging
import lzma
import os
import tarfile
from pathlib import Path

import fastavro
import pandas as pd
import pytest
from conftest import packet_paths

from alertvision.config import validate_config
from alertvision.data.ingest.avro import AvroInputError, ingest_avro, iter_packets, packet_files, read_avro
from alertvision.data.ingest.packets import Skip

COMPRESSORS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


def _schema() -> dict:
    with open(packet_paths()[0], "rb") as fh:
        return fastavro.reader(fh).writer_schema


def _candids(items) -> list[int]:
    return sorted(packet["candid"] for origin, packet in (i for i in items if isinstance(i, tuple)))


def _skips(items) -> list[Skip]:
    return [i for i in items if isinstance(i, Skip)]


ALL = sorted(int(p.stem) for p in packet_paths())


def test_linked_folders_are_followed_once_and_a_cycle_ends(tmp_path, caplog):
    real = tmp_path / "real"
    (real / "night1").mkdir(parents=True)
    (real / "night2").mkdir()
    paths = packet_paths()
    for path in paths[:6]:
        (real / "night1" / path.name).write_bytes(path.read_bytes())
    for path in paths[6:]:
        (real / "night2" / path.name).write_bytes(path.read_bytes())
    top = tmp_path / "top"
    top.mkdir()
    os.symlink(real / "night1", top / "night1")  # a linked subfolder
    os.symlink(real / "night2", top / "night2")
    os.symlink(top, real / "night2" / "back")  # a cycle: top/night2/back -> top
    os.symlink(real / "night1" / paths[0].name, top / "again.avro")  # a second link to a file read already
    with caplog.at_level(logging.WARNING):
        items = list(iter_packets(top))
    assert _candids(items) == ALL and not _skips(items)
    assert "already read" in caplog.text


def test_a_dangling_link_is_refused_by_name(tmp_path):
    folder = tmp_path / "packets"
    folder.mkdir()
    os.symlink(tmp_path / "gone.avro", folder / "x.avro")
    with pytest.raises(AvroInputError, match="x.avro cannot be read"):
        packet_files(folder)


def test_compressed_packets_and_archives_are_read(tmp_path, caplog):
    folder = tmp_path / "packets"
    folder.mkdir()
    paths = packet_paths()
    for i, (suffix, compress) in enumerate(COMPRESSORS.items()):
        path = paths[i]
        (folder / f"{path.name}{suffix}").write_bytes(compress(path.read_bytes()))
    for mode, suffix, group in [("w:bz2", ".tar.bz2", paths[3:7]), ("w:xz", ".tar.xz", paths[7:11])]:
        with tarfile.open(folder / f"night{suffix}", mode) as tar:
            for path in group:
                tar.add(path, arcname=f"night/{path.name}")
    with tarfile.open(folder / "night.tar", "w") as tar:  # a member compressed on its own
        member = tmp_path / f"{paths[11].name}.gz"
        member.write_bytes(gzip.compress(paths[11].read_bytes()))
        tar.add(member, arcname=f"night/{member.name}")
    (folder / "notes.txt").write_text("not a packet")
    with caplog.at_level(logging.WARNING):
        items = list(iter_packets(folder))
    assert _candids(items) == ALL and not _skips(items)
    assert "notes.txt" in caplog.text and "not read" in caplog.text
    # a file named on its own is told by its bytes, whatever its name
    odd = tmp_path / "packet.bin"
    odd.write_bytes(gzip.compress(paths[0].read_bytes()))
    assert _candids(iter_packets(odd)) == [int(paths[0].stem)]


def test_a_damaged_xz_archive_is_counted(tmp_path):
    archive = tmp_path / "night.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        for path in packet_paths():
            tar.add(path, arcname=path.name)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    items = list(iter_packets(archive))
    skips = _skips(items)
    assert [s.reason for s in skips] == ["corrupt_archive"] and len(_candids(items)) < 12


def test_concatenated_containers_are_all_read_and_damage_costs_only_its_container():
    paths = packet_paths()
    stream = b"".join(p.read_bytes() for p in paths)
    items = list(read_avro(io.BytesIO(stream), "<stdin>"))
    assert _candids(items) == ALL and not _skips(items)
    # one container written with several packets, then garbage, then a container cut short, then whole ones
    many = io.BytesIO()
    fastavro.writer(many, _schema(), [r for p in paths[:3] for r in fastavro.reader(open(p, "rb"))])
    cut = paths[3].read_bytes()
    damaged = many.getvalue() + b"\x07garbage" + cut[: len(cut) // 2] + b"".join(p.read_bytes() for p in paths[4:])
    items = list(read_avro(io.BytesIO(damaged), "<stdin>"))
    assert _candids(items) == sorted(ALL[:3] + ALL[4:])
    # two damaged regions: the bytes that are no container, and the container cut short
    skips = _skips(items)
    assert [s.reason for s in skips] == ["corrupt_packet"] * 2
    assert "after 3 packet(s)" in skips[0].detail and "sync marker" in skips[1].detail


def _config(path: Path, labels: Path, cuts: dict | None = None) -> dict:
    data = {"source": "avro", "avro": {"path": str(path), "labels": str(labels)}}
    if cuts is not None:
        data["cuts"] = cuts
    return validate_config({"data": data, "grid": {"datasets": ["ztf"]}})


def _variants(tmp_path: Path, packets: list[dict]) -> tuple[Path, Path]:
    """The twelve real packets plus four modified copies: programid 3, isdiffpos '1', isdiffpos 'f', jd NaN."""
    folder = tmp_path / "packets"
    folder.mkdir()
    for path in packet_paths():
        (folder / path.name).write_bytes(path.read_bytes())
    base = packets[0]
    changes = {
        "programid3": {"programid": 3},
        "isdiffpos1": {"isdiffpos": "1"},
        "negative": {"isdiffpos": "f"},
        "nanjd": {"jd": float("nan")},
    }
    for k, (name, change) in enumerate(changes.items()):
        packet = {**base, "objectId": f"ZTF99{name}", "candid": 100 + k, "candidate": {**base["candidate"], **change}}
        packet["candidate"]["candid"] = 100 + k
        with open(folder / f"{name}.avro", "wb") as fh:
            fastavro.writer(fh, _schema(), [packet])
    ids = sorted({p["objectId"] for p in packets} | {f"ZTF99{name}" for name in changes})
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"objectId": ids, "label": 1, "source_set": "trues"}).to_csv(labels, index=False)
    return folder, labels


def test_the_ingest_cuts_count_by_reason_and_refuse_a_nan_jd(tmp_path, packets):
    folder, labels = _variants(tmp_path, packets)
    manifest = ingest_avro(_config(folder, labels), tmp_path / "btsbot", progress=False)
    assert manifest["n_alerts"] == 12
    assert manifest["skipped"] == {"bad_jd": 1, "cut_isdiffpos": 1, "cut_isdiffpos_spelling": 1, "cut_programid": 1}
    assert manifest["cuts"] == {"programids": [1], "isdiffpos": "btsbot"}
    lenient = {"programids": [1, 3], "isdiffpos": "lenient"}
    manifest = ingest_avro(_config(folder, labels, lenient), tmp_path / "lenient", progress=False)
    assert manifest["n_alerts"] == 14 and manifest["skipped"] == {"bad_jd": 1, "cut_isdiffpos": 1}
    assert manifest["cuts"] == lenient


@pytest.mark.parametrize("suffix", [None, *COMPRESSORS])
def test_a_stream_of_containers_is_read_plain_or_compressed(suffix):
    from alertvision.data.ingest.avro import read_stream

    stream = b"".join(p.read_bytes() for p in packet_paths())
    data = stream if suffix is None else COMPRESSORS[suffix](stream)
    items = list(read_stream(io.BytesIO(data), "<stdin>"))
    assert _candids(items) == ALL and not _skips(items)


def test_the_synthetic_stream_counts_its_cuts_by_reason(tiny_datasets):
    from alertvision.data.contract import open_dataset

    manifest = open_dataset(tiny_datasets["ztf"]).manifest
    assert manifest["cuts"] == {"programids": [1], "isdiffpos": "btsbot"}
    # the simulator issues negative subtractions ('f') and i-band alerts: each counted under its reason
    assert manifest["skipped"]["cut_isdiffpos"] > 0 and manifest["skipped"]["cut_fid"] > 0
    assert "cut" not in manifest["skipped"]
