"""Archives read as a stream that counts damage and reads on after it (alertvision.data.ingest.archive).

The archive of these tests is a night of 15 alerts: the 12 real packets and 3 variants of them, each
re-serialised with fastavro (a fixed sync marker, so the bytes are the same on every run), as a
.tar and as a .tar.gz.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
import zlib
from dataclasses import dataclass

import fastavro
import pytest
from conftest import packet_paths

from alertvision.data.ingest.archive import READ_SIZE, REPORT_KEYS, Member, read_archive
from alertvision.data.ingest.packets import InputReport, Skip

GARBLE = 2000
ORIGIN = "night"
#: The .tar.gz of the fixture as zlib 1.2.13 and fastavro 1.13 make it; with other bytes the exact
#: outcome of each damage differs and only the properties every outcome must have are checked.
RECORDED_TGZ = "36d0ec86adbf311d9fe2e8d26f2909a0cf8e9f6e6460278a51747462cde2e960"


@dataclass(frozen=True)
class Night:
    """The fixture archive: its members in order, as .tar and .tar.gz, and where each member lies in the tar."""

    members: dict[str, bytes]
    tar: bytes
    tgz: bytes
    header: dict[str, int]  # tar offset of each member's header
    end: dict[str, int]  # tar offset just past each member's data

    @property
    def names(self) -> list[str]:
        return list(self.members)

    def index(self, names) -> list[int]:
        return sorted(self.names.index(n) for n in names)


def _avro(schema: dict, packet: dict, i: int) -> bytes:
    buf = io.BytesIO()
    fastavro.writer(buf, schema, [packet], sync_marker=bytes([i]) * 16)
    return buf.getvalue()


def _variant(packet: dict, i: int) -> dict:
    """Another alert made from a real packet: a new objectId, candid and jd."""
    candid = packet["candid"] + 1000 + i
    return {
        **packet,
        "objectId": f"ZTF99night{i}",
        "candid": candid,
        "candidate": {**packet["candidate"], "candid": candid, "jd": packet["candidate"]["jd"] + 1 + i},
    }


def _tar(members: dict[str, bytes], fmt: int = tarfile.USTAR_FORMAT, extra=()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info in extra:
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1580601600
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def night(packets) -> Night:
    with open(packet_paths()[0], "rb") as fh:  # keys sorted: fastavro's own order varies with the hash seed
        schema = json.loads(json.dumps(fastavro.reader(fh).writer_schema, sort_keys=True))
    alerts = list(packets) + [_variant(packets[i], i) for i in range(3)]
    members = {f"night/{a['candid']}.avro": _avro(schema, a, i) for i, a in enumerate(alerts)}
    tar = _tar(members)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        infos = t.getmembers()
    return Night(
        members,
        tar,
        gzip.compress(tar, compresslevel=9, mtime=0),
        {m.name: m.offset for m in infos},
        {m.name: m.offset_data + m.size for m in infos},
    )


def _garble(data: bytes, offset: int, seed: int = 0) -> bytes:
    """``data`` with GARBLE deterministic random bytes from ``offset`` on."""
    return data[:offset] + random.Random(seed).randbytes(GARBLE) + data[offset + GARBLE :]


@dataclass(frozen=True)
class Read:
    members: dict[str, bytes]
    skips: list[Skip]
    report: dict[str, int]

    def offsets(self) -> list[int]:
        return [int(s.origin.rsplit("@", 1)[1]) for s in self.skips]


def _read(data: bytes, **kwargs) -> Read:
    items = list(read_archive(io.BytesIO(data), ORIGIN, **kwargs))
    assert isinstance(items[-1], InputReport) and items[-1].origin == ORIGIN
    assert all(isinstance(i, (Member, Skip)) for i in items[:-1])
    skips = [i for i in items if isinstance(i, Skip)]
    assert all(s.reason == "corrupt_archive" and s.origin.startswith(f"{ORIGIN}@") for s in skips)
    report = dict(items[-1].counts)
    assert set(report) == set(REPORT_KEYS) and report["damaged_regions"] == len(skips)
    return Read({i.name: i.data for i in items if isinstance(i, Member)}, skips, report)


def _tarfile_members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]


def _tar_bytes_before(tgz: bytes, offset: int) -> int:
    """How many tar bytes the compressed bytes before ``offset`` decode to."""
    return len(zlib.decompressobj(31).decompress(tgz[:offset]))


# --- intact archives --------------------------------------------------------------------------------------


def test_an_intact_archive_gives_exactly_what_tarfile_gives(night):
    for data in (night.tar, night.tgz):
        read = _read(data)
        assert list(read.members.items()) == _tarfile_members(data) == list(night.members.items())
        assert read.skips == [] and read.report == {**dict.fromkeys(REPORT_KEYS, 0), "members_read": 15}


def test_gnu_long_names_pax_headers_and_other_entries_read_as_tarfile_reads_them(night):
    long = {"night/" + "x" * 150 + f"/{i}.avro": data for i, data in enumerate(list(night.members.values())[:3])}
    folder = tarfile.TarInfo("night/sub")
    folder.type = tarfile.DIRTYPE
    link = tarfile.TarInfo("night/link.avro")
    link.type, link.linkname = tarfile.SYMTYPE, "y" * 120
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        data = _tar({**long, "night/README.txt": b"not a packet"}, fmt, extra=(folder, link))
        for archive in (data, gzip.compress(data)):
            read = _read(archive)
            assert list(read.members.items()) == _tarfile_members(archive)
            assert list(read.members) == [*long, "night/README.txt"] and read.skips == []
            wanted = _read(archive, wanted=lambda name: name.endswith(".avro"))
            assert list(wanted.members) == list(long) and wanted.report["members_read"] == 4


def test_a_multi_member_gzip_and_zero_padding_are_read_whole(night):
    third = len(night.tar) // 3
    pieces = [night.tar[:third], night.tar[third : 2 * third], night.tar[2 * third :]]
    data = b"".join(gzip.compress(p, mtime=0) for p in pieces) + bytes(1000)
    read = _read(data)
    assert read.members == night.members and read.skips == []


def test_the_file_is_read_in_small_pieces_even_where_it_is_damaged(night):
    """The archive is streamed: no read asks for more than READ_SIZE bytes, damaged or not."""
    sizes = []

    class Recording(io.BytesIO):
        def read(self, size=-1):
            sizes.append(size)
            return super().read(size)

    for data in (night.tar, night.tgz, _garble(night.tgz, len(night.tgz) // 2)):
        list(read_archive(Recording(data), ORIGIN))
    assert sizes and all(0 < s <= READ_SIZE for s in sizes)


# --- damaged .tar ----------------------------------------------------------------------------------------


def _tar_offsets(night: Night) -> dict[str, int]:
    names = night.names
    return {
        "in a header": night.header[names[4]] - 100,
        "in member data": (night.header[names[7]] + night.end[names[7]]) // 2,
        "at 25%": len(night.tar) // 4,
        "at 50%": len(night.tar) // 2,
        "at 75%": 3 * len(night.tar) // 4,
    }


@pytest.mark.parametrize("where", ["in a header", "in member data", "at 25%", "at 50%", "at 75%"])
def test_a_garbled_tar_keeps_every_member_whose_header_survives(night, where):
    offset = _tar_offsets(night)[where]
    read = _read(_garble(night.tar, offset))
    garbled = range(offset, offset + GARBLE)
    hit = [n for n in night.names if night.header[n] < garbled.stop and night.header[n] + 512 > garbled.start]
    assert set(read.members) == set(night.names) - set(hit)
    for name, data in read.members.items():  # tar has no checksum over data: only untouched members are exact
        untouched = night.end[name] <= garbled.start or night.header[name] >= garbled.stop
        assert (data == night.members[name]) == untouched
    if not hit:
        assert read.skips == []
        return
    after = min(night.header[n] for n in night.names if night.header[n] >= garbled.stop)
    assert read.offsets() == [night.header[hit[0]]]
    assert read.report["bad_headers"] >= 1 and read.report["members_read"] == 15 - len(hit)
    assert read.report["tar_bytes_unreadable"] == read.report["bytes_unreadable"] == after - night.header[hit[0]]


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.999, "at a member boundary"])
def test_a_truncated_tar_keeps_the_members_before_the_cut_and_counts_the_cut(night, cut):
    names = night.names
    size = night.header[names[9]] if cut == "at a member boundary" else int(len(night.tar) * cut)
    read = _read(night.tar[:size])
    whole = [n for n in names if night.end[n] <= size]
    assert read.members == {n: night.members[n] for n in whole}
    cut_inside = len(whole) < 15 and size > night.header[names[len(whole)]]
    assert len(read.skips) == 1 and read.report["members_damaged"] == cut_inside
    if cut == "at a member boundary":
        assert "end-of-archive" in read.skips[0].detail


# --- damaged .tar.gz -------------------------------------------------------------------------------------


def _report(read, damaged, bad, unreadable, tar_unreadable) -> dict[str, int]:
    return {
        "members_read": read,
        "members_damaged": damaged,
        "bad_headers": bad,
        "damaged_regions": 1,
        "bytes_unreadable": unreadable,
        "tar_bytes_unreadable": tar_unreadable,
    }


#: What each damage of the recorded .tar.gz comes to: indices of the members kept, and the report.
#: Where the damage shows only at the next header (zlib decoded the garbage without failing), the
#: member it starts in is kept: its bytes reach the Avro reader, which rejects them. Every member
#: after a damage in Huffman-coded data is lost: decoded over the lost 32 KiB window, each holds a
#: few hundred wrong bytes (chains of back-references carry the lost bytes from packet to packet
#: through the schema text and the stamp file names), so each is counted as damaged, or the search
#: finds no header free of lost bytes and counts the rest of the file.
TGZ_OUTCOMES = {
    0.1: ([0, 1], _report(2, 9, 1, 7115, 974046)),
    0.25: ([0, 1, 2, 3], _report(4, 9, 1, 11579, 821144)),
    0.5: ([0, 1, 2, 3, 4, 5, 6], _report(7, 4, 0, 3703, 607463)),
    0.75: ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], _report(12, 0, 1, 132569, 36430)),
    0.9: ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], _report(14, 0, 1, 34265, 41557)),
}


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.75, 0.9])
def test_a_garbled_tgz_keeps_the_members_before_the_damage_and_counts_the_rest(night, fraction):
    offset = int(len(night.tgz) * fraction)
    read = _read(_garble(night.tgz, offset))
    clean_until = _tar_bytes_before(night.tgz, offset)
    before = [n for n in night.names if night.end[n] <= clean_until]
    assert all(read.members.get(n) == night.members[n] for n in before)
    # the damage is counted where it showed, at or after the garbled bytes
    assert read.skips and all(o >= offset for o in read.offsets())
    # nothing known to be wrong comes out: only the member the damage starts in can differ
    straddling = [n for n in night.names if night.header[n] < clean_until < night.end[n]]
    assert {n for n, d in read.members.items() if d != night.members[n]} <= set(straddling)
    # and what is not read is counted
    assert read.report["members_read"] == len(read.members)
    if len(read.members) < 15:
        assert read.report["tar_bytes_unreadable"] > 0
    if hashlib.sha256(night.tgz).hexdigest() == RECORDED_TGZ:
        assert (night.index(read.members), read.report) == TGZ_OUTCOMES[fraction]
        for name in straddling:
            if name in read.members and read.members[name] != night.members[name]:
                with pytest.raises(Exception):
                    list(fastavro.reader(io.BytesIO(read.members[name])))


def test_a_garbled_gzip_member_loses_nothing_of_the_gzip_members_after_it(night):
    """Damage in one gzip member of several: decompression resumes at the next one, whose window starts empty."""
    cuts = [0, night.header[night.names[5]] + 7000, night.header[night.names[10]] - 3000, len(night.tar)]
    pieces = [gzip.compress(night.tar[a:b], mtime=0) for a, b in zip(cuts, cuts[1:])]
    data = b"".join(pieces)
    offset = len(pieces[0]) + len(pieces[1]) // 2
    read = _read(_garble(data, offset))
    assert all(read.members.get(n) == night.members[n] for n in night.names if night.end[n] <= cuts[1])
    assert all(read.members.get(n) == night.members[n] for n in night.names if night.header[n] >= cuts[2])
    assert len(read.skips) == 1 and read.offsets()[0] >= offset
    assert f"resumed at byte {len(pieces[0]) + len(pieces[1]) + 10}" in read.skips[0].detail


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9999])
def test_a_truncated_tgz_keeps_the_members_before_the_cut(night, fraction):
    size = int(len(night.tgz) * fraction)
    read = _read(night.tgz[:size])
    whole = [n for n in night.names if night.end[n] <= _tar_bytes_before(night.tgz, size)]
    assert read.members == {n: night.members[n] for n in whole}
    assert read.offsets() == [size] and "truncated" in read.skips[0].detail


def test_a_bad_crc_in_the_gzip_trailer_is_counted_and_every_member_kept(night):
    data = bytearray(night.tgz)
    data[-8] ^= 0xFF
    read = _read(bytes(data))
    assert read.members == night.members
    assert read.offsets() == [len(data) - 5] and "CRC" in read.skips[0].detail
    assert read.report["members_damaged"] == read.report["tar_bytes_unreadable"] == 0


def test_a_file_that_is_no_archive_is_counted_not_raised(night):
    for data in (b"", b"\x1f\x8b" + bytes(100), random.Random(1).randbytes(5000)):
        read = _read(data)
        assert read.members == {} and len(read.skips) == 1
