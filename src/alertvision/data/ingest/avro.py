"""Raw ZTF alert packets: .avro files, or .tar / .tar.gz archives of them as the public nightly
alert archive (ztf.uw.edu/alerts/public) ships them, plus a labels table -> the data contract.

Every input is read or refused by name, never passed over: a folder is searched recursively,
following links to folders and files (each folder and file read once, so a link cycle ends); in it
Avro files (``.avro``, or compressed whole: ``.avro.gz`` / ``.avro.bz2`` / ``.avro.xz``) and archives
(``.tar``, ``.tar.gz`` / ``.tgz``, ``.tar.bz2`` / ``.tbz2``, ``.tar.xz`` / ``.txz``) are read and any
other file is named in the log as not read. A file named on its own is read whatever its name, told by
its first bytes. An Avro stream may hold several container files one after another (as ``cat`` or a
stream writes them): all are read.

Packets stream through :func:`alertvision.data.ingest.packets.write_packet_dataset`. Each Avro data
block is decoded on its own: a block or file that cannot be read is counted under ``corrupt_packet``
(the packets before it are kept, and reading goes on at the next container in the stream); an archive
is read past its damage by :mod:`alertvision.data.ingest.archive`, each damaged region counted under
``corrupt_archive`` and each archive's totals in the manifest's ``archives_read``. All are named in
the log; none stops the run.
"""

from __future__ import annotations

import bz2
import gzip
import io
import logging
import lzma
import os
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping

from alertvision.data.contract import config_digest
from alertvision.data.features import Cuts
from alertvision.data.ingest.archive import Member, read_archive
from alertvision.data.ingest.labels import read_labels
from alertvision.data.ingest.packets import ROW_COLUMNS, InputReport, Skip, write_packet_dataset

log = logging.getLogger(__name__)

#: Archives read from a folder, by name (a file named on its own is told by its first bytes).
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")
#: Avro packet files read from a folder, by name: plain, or compressed whole with gzip, bzip2 or xz.
AVRO_SUFFIXES = (".avro", ".avro.gz", ".avro.bz2", ".avro.xz")
PacketItem = "tuple[str, dict[str, Any]] | Skip | InputReport"

_AVRO_MAGIC = b"Obj\x01"
_COMPRESSION_MAGIC = {b"\x1f\x8b": "gz", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz"}
_OPENERS: dict[str, Callable[..., BinaryIO]] = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}
#: What a compressed stream raises when its data is damaged or cut short.
_DECOMPRESSION_ERRORS = (OSError, EOFError, lzma.LZMAError, zlib.error)
_SYNC = 16  # bytes of an Avro container's sync marker


class AvroInputError(ValueError):
    """A configured packet path that does not exist or holds no packets."""


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _is_packet_name(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES + AVRO_SUFFIXES)


def _walk(folder: Path, found: list[Path], passed_over: list[Path]) -> None:
    """The packet files and archives under ``folder``, following links to folders and files; a folder
    reached twice (a link cycle, or two links to one folder) and a file reached twice are read once."""
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        here = os.stat(root)
        if (here.st_dev, here.st_ino) in seen_dirs:
            log.warning("%s is a folder already read (a link cycle or a second link to it): not read again", root)
            dirs[:] = []
            continue
        seen_dirs.add((here.st_dev, here.st_ino))
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            try:
                st = path.stat()
            except OSError as exc:  # a dangling link
                raise AvroInputError(f"packet path {path} cannot be read: {exc.strerror or exc}") from exc
            if (st.st_dev, st.st_ino) in seen_files:
                continue
            seen_files.add((st.st_dev, st.st_ino))
            (found if _is_packet_name(name) else passed_over).append(path)


def packet_files(paths: str | os.PathLike | Iterable[str | os.PathLike], quiet: bool = False) -> list[Path]:
    """The packet files (.avro, .avro.gz / .bz2 / .xz) and archives (.tar, .tar.gz, .tar.bz2, .tar.xz)
    under ``paths``, folders searched recursively through links (each folder and file once); a file
    named on its own is read whatever its name. Other files in a folder are named in the log (unless
    ``quiet``: for listing the inputs, not reading them)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files: list[Path] = []
            passed_over: list[Path] = []
            _walk(p, files, passed_over)
            found.extend(files)
            if passed_over and not quiet:
                log.warning(
                    "%s: %d file(s) neither Avro packets (%s) nor archives (%s), not read: %s",
                    p,
                    len(passed_over),
                    "/".join(AVRO_SUFFIXES),
                    "/".join(ARCHIVE_SUFFIXES),
                    ", ".join(str(f.relative_to(p)) for f in passed_over[:10])
                    + (f" and {len(passed_over) - 10} more" if len(passed_over) > 10 else ""),
                )
        elif p.is_file():
            found.append(p)
        else:
            raise AvroInputError(f"packet path {p} does not exist (config key data.avro.path)")
    if not found:
        raise AvroInputError(
            f"no packet file ({', '.join(AVRO_SUFFIXES)}) or archive ({', '.join(ARCHIVE_SUFFIXES)}) under "
            f"{', '.join(map(str, paths))} (config key data.avro.path)"
        )
    return found


class _Stream:
    """A binary stream read in exact pieces, with bytes pushed back (to look ahead at a container's end)."""

    def __init__(self, fh: BinaryIO):
        self.fh, self.back = fh, b""
        self.taken = bytearray()  # what was read since the last mark, to read again after damage

    def read(self, n: int) -> bytes:
        out, self.back = self.back[:n], self.back[n:]
        while len(out) < n:
            chunk = self.fh.read(n - len(out))
            if not chunk:
                break
            out += chunk
        self.taken += out
        return out

    def mark(self) -> None:
        self.taken = bytearray()

    def exact(self, n: int) -> bytes:
        out = self.read(n)
        if len(out) < n:
            raise EOFError(f"the stream ends {n - len(out)} byte(s) early")
        return out

    def push(self, data: bytes) -> None:
        """Unread ``data``: the next reads give it first."""
        self.back = data + self.back
        del self.taken[max(len(self.taken) - len(data), 0) :]

    def long(self, raw: bytearray) -> int:
        """One Avro long (zig-zag varint), its bytes appended to ``raw``."""
        shift = value = 0
        while True:
            byte = self.exact(1)
            raw += byte
            value |= (byte[0] & 0x7F) << shift
            if not byte[0] & 0x80:
                return (value >> 1) ^ -(value & 1)
            shift += 7
            if shift > 63:
                raise ValueError("an Avro long runs over 10 bytes")


def _header(stream: _Stream) -> tuple[bytes, bytes]:
    """An Avro container's header (magic already read and checked) and its sync marker."""
    raw = bytearray(_AVRO_MAGIC)
    while True:  # the metadata map, in blocks of entries
        count = stream.long(raw)
        if count == 0:
            break
        if count < 0:
            count = -count
            stream.long(raw)  # the block's byte size
        for _ in range(2 * count):  # key, value: both length-prefixed bytes
            size = stream.long(raw)
            if size < 0:
                raise ValueError("negative length in the container header")
            raw += stream.exact(size)
    sync = stream.exact(_SYNC)
    return bytes(raw + sync), sync


#: A function from a container's writer schema (as its header holds it) to the reader schema to decode it
#: with: fastavro leaves out (skips) the fields the reader schema lacks (:func:`read_avro`'s ``project``).
Projection = Callable[[dict], dict]
#: Per container header (without its sync marker) and projection: the codec and the parsed writer and
#: reader schemas, so that one-packet files of one schema parse it once (:func:`_plan`).
_PLANS: dict[tuple[bytes, Projection], tuple[str, Any, Any]] = {}
_MAX_PLANS = 16
#: Codecs :func:`_decode_block` decompresses itself; others go through ``fastavro.reader``.
_OWN_CODECS = ("null", "deflate")


def _plan(header: bytes, project: Projection) -> tuple[str, Any, Any]:
    """The codec, parsed writer schema and parsed projected reader schema of a container's ``header``."""
    import fastavro  # deferred: fastavro is heavy

    key = (header[:-_SYNC], project)
    plan = _PLANS.get(key)
    if plan is None:
        reader = fastavro.reader(io.BytesIO(header))
        writer = fastavro.parse_schema(reader.writer_schema)
        plan = (reader.codec, writer, fastavro.parse_schema(project(reader.writer_schema)))
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def _decode_block(header: bytes, block: bytes, sync: bytes, count: int, size: int, project: Projection) -> list:
    """The records of one data block (``block``: its count, its size and its ``size`` bytes) decoded with
    the reader schema ``project`` makes of the container's writer schema."""
    import fastavro  # deferred: fastavro is heavy

    codec, writer, reader = _plan(header, project)
    if codec not in _OWN_CODECS:
        return list(fastavro.reader(io.BytesIO(header + block + sync), reader_schema=reader))
    data = block[len(block) - size :]
    if codec == "deflate":
        data = zlib.decompress(data, -15)
    body = io.BytesIO(data)
    return [fastavro.schemaless_reader(body, writer, reader) for _ in range(count)]


def read_avro(fh: BinaryIO, origin: str, project: Projection | None = None) -> Iterator[PacketItem]:
    """The packets of the Avro object container files open in ``fh`` (``origin`` names it): one file, or
    several written one after another (as on a stream). Each data block is decoded by fastavro on its own,
    so a block that cannot be read costs only its packets: a ``corrupt_packet`` :class:`Skip` per damaged
    region (a garbled or cut block, or bytes that are no container), reading on at the next container.

    ``project``: a function of the writer schema giving a reader schema with only the fields a caller
    reads (:data:`Projection`): each packet then holds those fields alone, with the values the full decode
    gives, and each schema is parsed once (not once per container)."""
    import fastavro  # deferred: fastavro is heavy

    stream = _Stream(fh)
    n = 0
    header: bytes | None = None
    sync = b""
    damaged = False  # passing over damage: further failures belong to the same region

    def skip(why: str) -> Skip:
        where = f" after {n} packet(s)" if n else ""
        return Skip("corrupt_packet", origin, f"unreadable{where}: {why}")

    while True:
        stream.mark()
        try:
            head = stream.read(len(_AVRO_MAGIC))
            if not head:
                return
            if head == _AVRO_MAGIC:
                header, sync = _header(stream)
                damaged = False
                continue
            if header is None:
                raise ValueError("not an Avro object container file (no 'Obj\\x01' magic)")
            stream.push(head)
            block = bytearray()
            count = stream.long(block)  # the packets in the block
            size = stream.long(block)
            if size < 0:
                raise ValueError("negative block size")
            block += stream.exact(size)
            if stream.exact(_SYNC) != sync:
                raise ValueError("a data block does not end in the container's sync marker")
        except _DECOMPRESSION_ERRORS + (ValueError,) as exc:
            if not damaged:
                yield skip(f"{type(exc).__name__}: {exc}")
            damaged, header = True, None
            stream.push(bytes(stream.taken[1:]))  # a container may start inside what the broken one took
            if not _to_next_container(stream):
                return
            continue
        try:
            if project is None:
                records = list(fastavro.reader(io.BytesIO(header + bytes(block) + sync)))
            else:
                records = _decode_block(header, bytes(block), sync, count, size, project)
        except Exception as exc:  # fastavro raises several types for a garbled block
            yield skip(f"{type(exc).__name__}: {exc}")
            continue
        for record in records:
            n += 1
            yield origin, record


def _to_next_container(stream: _Stream) -> bool:
    """Read on to the next container magic (pushed back); False at the end of the stream."""
    tail = b""
    while True:
        try:
            chunk = stream.read(1 << 16)
        except _DECOMPRESSION_ERRORS:
            return False
        if not chunk:
            return False
        data = tail + chunk
        at = data.find(_AVRO_MAGIC)
        if at >= 0:
            stream.push(data[at:])
            return True
        tail = data[-(len(_AVRO_MAGIC) - 1) :]


def _compression(head: bytes) -> str | None:
    return next((kind for magic, kind in _COMPRESSION_MAGIC.items() if head.startswith(magic)), None)


def _is_tar(head: bytes) -> bool:
    return head[257:262] == b"ustar"


class _Prefixed:
    """A stream whose first bytes were read to tell what it holds, given back to the next reader."""

    def __init__(self, head: bytes, fh: BinaryIO):
        self.head, self.fh = head, fh

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.fh.read(n)
        if n < 0:
            out, self.head = self.head + self.fh.read(), b""
            return out
        out, self.head = self.head[:n], self.head[n:]
        return out if len(out) == n else out + self.fh.read(n - len(out))


def _head(fh: BinaryIO) -> bytes:
    """Up to 512 bytes from the start of ``fh`` (fewer where it ends or cannot be decompressed)."""
    out = b""
    try:
        while len(out) < 512:
            chunk = fh.read(512 - len(out))
            if not chunk:
                break
            out += chunk
    except _DECOMPRESSION_ERRORS:
        pass
    return out


def _holds_archive(head: bytes, path: Path) -> bool:
    """Whether a file (its first 512 decompressed bytes) is a tar: its magic says so, or it is neither
    tar nor Avro to look at (damaged) and named as an archive."""
    return _is_tar(head) or (not head.startswith(_AVRO_MAGIC) and _is_archive(path))


def _read_archive(path: Path, fh: BinaryIO, project: Projection | None = None) -> Iterator[PacketItem]:
    """The packets of an archive's .avro members, a skip per damaged region, then the archive's report
    (see :mod:`alertvision.data.ingest.archive`). A .tar.bz2 / .tar.xz is read through its decompressor:
    damage there ends the archive (one ``corrupt_archive`` skip for the rest)."""
    try:
        for item in read_archive(fh, str(path), wanted=_is_avro_member):
            if isinstance(item, Member):
                data: BinaryIO = io.BytesIO(item.data)
                kind = _compression(item.data[:8])
                if kind is not None:  # a member .avro.gz / .bz2 / .xz
                    data = _OPENERS[kind](data, "rb")
                yield from read_avro(data, f"{path}:{item.name}", project)
                continue
            if isinstance(item, InputReport) and item.counts["damaged_regions"]:
                counts = ", ".join(f"{key} {n}" for key, n in item.counts.items())
                log.warning("archive %s is damaged: %s", path, counts)
            yield item
    except _DECOMPRESSION_ERRORS as exc:
        yield Skip("corrupt_archive", str(path), f"unreadable from here on: {type(exc).__name__}: {exc}")


def _is_avro_member(name: str) -> bool:
    return name.lower().endswith(AVRO_SUFFIXES)


def read_packet_file(path: Path, project: Projection | None = None) -> Iterator[PacketItem]:
    """The packets of one file: Avro, or an archive, each plain or compressed whole with gzip, bzip2 or
    xz, told by their first bytes (by the name where those are damaged); ``project``: see :func:`read_avro`."""
    with open(path, "rb") as raw:
        kind = _compression(raw.read(8))
        raw.seek(0)
        if kind is None:
            head = _head(raw)
            raw.seek(0)
            if _holds_archive(head, path):
                yield from _read_archive(path, raw, project)
            else:
                yield from read_avro(raw, str(path), project)
        elif kind == "gz":
            with gzip.GzipFile(fileobj=raw, mode="rb") as probe:
                head = _head(probe)
            raw.seek(0)
            if _holds_archive(head, path):
                yield from _read_archive(path, raw, project)  # the archive reader reads past gzip damage itself
            else:
                with gzip.GzipFile(fileobj=raw, mode="rb") as fh:
                    yield from read_avro(fh, str(path), project)
        else:
            with _OPENERS[kind](raw, "rb") as fh:
                head = _head(fh)
                stream = _Prefixed(head, fh)
                if _holds_archive(head, path):
                    yield from _read_archive(path, stream, project)  # type: ignore[arg-type]
                else:
                    yield from read_avro(stream, str(path), project)  # type: ignore[arg-type]


def read_stream(fh: BinaryIO, origin: str, project: Projection | None = None) -> Iterator[PacketItem]:
    """The packets of a stream (stdin): Avro containers one after another, plain or compressed whole;
    ``project``: see :func:`read_avro`."""
    stream = fh if hasattr(fh, "peek") else io.BufferedReader(fh)  # type: ignore[arg-type]
    kind = _compression(stream.peek(8)[:8])
    if kind is None:
        yield from read_avro(stream, origin, project)
        return
    with _OPENERS[kind](stream, "rb") as inner:
        yield from read_avro(inner, origin, project)


def iter_packets(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> Iterator[PacketItem]:
    """Every packet under ``paths`` as ``(origin, packet)``, a :class:`Skip` where reading fails, and an
    :class:`InputReport` after each archive."""
    for path in packet_files(paths):
        yield from read_packet_file(path)


def ingest_avro(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Write the dataset of the labelled sources' ZTF packets under ``data.avro.path``; returns the manifest.
    (the lsst dataset, ``data.lsst.source: avro``: the avro source calls
    :func:`alertvision.surveys.lsst.dataset.ingest_lsst_avro`.)"""
    cfg = config["data"]["avro"]
    cuts = Cuts.from_spec(config["data"].get("cuts"))
    if not cfg.get("path") or not cfg.get("labels"):
        raise AvroInputError(
            "data.source 'avro' needs data.avro.path (packets) and data.avro.labels "
            "(a table of objectId, label, source_set)"
        )
    labels, listings = read_labels(cfg["labels"], reserved=ROW_COLUMNS)
    files = packet_files(cfg["path"])
    n_archives = sum(map(_is_archive, files))
    log.info(
        "reading %d packet file(s) and %d archive(s) for %d labelled sources",
        len(files) - n_archives,
        n_archives,
        len(labels),
    )
    return write_packet_dataset(
        out_dir,
        iter_packets(files),
        labels,
        config["splits"],
        source="avro",
        digest=config_digest(cfg, config["splits"], cuts.spec()),
        progress=progress,
        total=None if n_archives else len(files),
        history=cfg["history"],
        dims_peak_limit=cfg["dims_peak_limit"],
        cuts=cuts,
        masked_pixels=config["data"]["masked_pixels"],
        extra={
            "inputs": {
                "packet_files": len(files) - n_archives,
                "archives": n_archives,
                "labels": str(cfg["labels"]),
                "labelled_sources": int(len(labels)),
            },
            "labels": listings,
        },
    )
