"""Rubin/LSST alert packets: Avro container files and Rubin's wire format, every schema 7.0 to 11.1.

Two framings reach a consumer:

- **container**: an Avro object container file (magic ``Obj\\x01``, the writer's schema in the header,
  then blocks of records), as brokers and archives redistribute alerts. Several containers
  concatenated in one file or stream are all read, one after the other.
- **wire**: one alert as Rubin's Kafka stream carries it: byte 0 is 0, bytes 1-4 the big-endian schema
  id (``major * 100 + minor``, e.g. 1101 for 11.1), then the Avro body without a header. The schema
  of an id comes from a folder the user names, from a schema registry (the registry API,
  ``GET /schemas/ids/<id>``; :class:`SchemaRegistry`), or from Rubin's ``lsst-alert-packet`` package
  (an optional extra, ``pip install 'alertvision[lsst]'``; looked up only when a wire packet needs it),
  in that order.
  One input holds one wire packet; bytes after its body are damage.

The top-level id is ``alertId`` in schemas up to 7.x and ``diaSourceId`` from 8.0. A packet that
cannot be read is a :class:`~alertvision.surveys.base.Skip` under one of :data:`DECODE_REASONS`;
a schema id that no configured place holds is ``unknown_schema``, and the message names the id,
its version and where it was looked for.
"""

from __future__ import annotations

import io
import json
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping

import fastavro
from fastavro.schema import load_schema

from alertvision.data.ingest.http import HttpError, JsonClient, Redactor
from alertvision.surveys.base import PacketError, Skip

__all__ = [
    "DECODE_REASONS",
    "MAGIC",
    "SCHEMA_VERSIONS",
    "SchemaStore",
    "UnknownSchemaError",
    "decode_wire",
    "encode_wire",
    "read_packets",
    "schema_id",
]

MAGIC = b"Obj\x01"
#: the public schema versions this module reads (the ones Rubin's alerts have used since 7.0)
SCHEMA_VERSIONS: tuple[str, ...] = ("7.0", "7.1", "7.2", "7.3", "7.4", "8.0", "9.0", "10.0", "11.0", "11.1")
#: the reasons a packet (or the rest of an input) is skipped while decoding
DECODE_REASONS: dict[str, str] = {
    "empty_input": "the input holds no byte",
    "bad_framing": "neither a container (Obj\\x01) nor a wire packet (byte 0 is 0, a 4-byte schema id)",
    "unknown_schema": "a wire packet's schema id that no configured schema place holds",
    "truncated": "the input ends inside a packet",
    "bad_body": "a wire body that does not decode with its schema, or bytes after it",
    "corrupt_container": "a container block whose sync marker or records do not read",
    "not_lsst": "a record without a diaSource (not a Rubin alert)",
    "ambiguous_schema": "a schema id for which the named folder holds several files",
}
PACKAGE = "lsst.alert.packet"


def schema_id(version: str) -> int:
    """``"11.1"`` -> 1101."""
    major, minor = (int(x) for x in version.split("."))
    return major * 100 + minor


def version_of(sid: int) -> str:
    """1101 -> ``"11.1"``."""
    return f"{sid // 100}.{sid % 100}"


class UnknownSchemaError(PacketError):
    """A schema id that no configured place holds."""

    def __init__(self, sid: int, places: str):
        super().__init__(
            "unknown_schema",
            f"schema id {sid} (version {version_of(sid)}) is not in {places}; name a folder holding "
            f"lsst.v{sid // 100}_{sid % 100}.alert.avsc (or {sid}.avsc) or install the extra: "
            f"pip install 'alertvision[lsst]'",
        )
        self.schema_id = sid


def _package_schema_root() -> Path | None:
    """The ``schema`` folder of the installed lsst-alert-packet, found without importing it."""
    try:
        spec = find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "schema"
    return root if root.is_dir() else None


class SchemaRegistry:
    """A schema registry's ``GET /schemas/ids/<id>`` (the answer's ``schema`` is the schema as JSON text),
    with the project's HTTP client: timeouts, retries of 5xx answers, timeouts and broken bodies. A 404
    is "not here" (None); any other failure, after the retries, raises
    :class:`~alertvision.data.ingest.http.HttpError` naming the registry: an unreachable registry stops
    the stream rather than skipping every packet."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, retries: int = 2, backoff_s: float = 0.2):
        self.url = url
        self.client = JsonClient(
            url,
            f"LSST schema registry {url}",
            timeout_s=timeout_s,
            retries=retries,
            backoff_s=backoff_s,
            rate_per_s=1000.0,
            redactor=Redactor(),
        )

    def get(self, sid: int) -> Any | None:
        """The parsed schema of ``sid``, or None where the registry does not know it."""
        answer = self.client.get(f"/schemas/ids/{int(sid)}", authenticate=False, missing_ok=True)
        if answer is None:
            return None
        try:
            return fastavro.parse_schema(json.loads(answer["schema"]))
        except Exception as exc:  # a missing key, text that is not JSON, JSON that is not an Avro schema
            raise HttpError(
                f"LSST schema registry {self.url}: schema id {sid} is not an Avro schema: {type(exc).__name__}: {exc}"
            ) from None


class SchemaStore:
    """Rubin alert schemas by wire id: from ``folder`` (searched first, recursively: a file
    ``lsst.v<major>_<minor>.alert.avsc`` whose named types sit beside it as ``<namespace>.<name>.avsc``,
    as Rubin lays them out, or a complete schema ``<id>.avsc`` / ``<id>.json``), then from the schema
    ``registry`` (a URL or a :class:`SchemaRegistry`; None: none), then, when ``package`` is true, from the installed
    ``lsst-alert-packet``."""

    def __init__(
        self, folder: str | Path | None = None, package: bool = True, registry: str | SchemaRegistry | None = None
    ):
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None and not self.folder.is_dir():
            raise FileNotFoundError(f"LSST schema folder {self.folder} does not exist: name a folder of .avsc files")
        self.package = package
        self.registry = SchemaRegistry(registry) if isinstance(registry, str) else registry
        self._cache: dict[int, Any] = {}

    def places(self) -> str:
        where = [f"folder {self.folder}"] if self.folder is not None else []
        if self.registry is not None:
            where.append(f"the schema registry {self.registry.url}")
        if self.package:
            root = _package_schema_root()
            where.append(f"the {PACKAGE} package at {root}" if root else f"the {PACKAGE} package (not installed)")
        return " nor ".join(where) or "no schema place (none configured)"

    def _find(self, sid: int) -> Path | None:
        """The file of ``sid`` in the named folder, or None."""
        major, minor = sid // 100, sid % 100
        name = f"lsst.v{major}_{minor}.alert.avsc"
        if self.folder is not None:
            found = sorted(self.folder.rglob(name)) or [
                p for ext in (".avsc", ".json") for p in sorted(self.folder.rglob(f"{sid}{ext}"))
            ]
            if len(found) > 1:
                raise PacketError(
                    "ambiguous_schema", f"schema id {sid}: several files in {self.folder}: {', '.join(map(str, found))}"
                )
            if found:
                return found[0]
        return None

    def _package_file(self, sid: int) -> Path | None:
        root = _package_schema_root() if self.package else None
        path = root / str(sid // 100) / str(sid % 100) / f"lsst.v{sid // 100}_{sid % 100}.alert.avsc" if root else None
        return path if path is not None and path.is_file() else None

    def get(self, sid: int) -> Any:
        """The parsed schema of wire id ``sid``; raises :class:`UnknownSchemaError` naming it."""
        if sid not in self._cache:
            path = self._find(sid)
            schema = _load(str(path)) if path is not None else None
            if schema is None and self.registry is not None:
                schema = self.registry.get(sid)
            if schema is None and (path := self._package_file(sid)) is not None:
                schema = _load(str(path))
            if schema is None:
                raise UnknownSchemaError(sid, self.places())
            self._cache[sid] = schema
        return self._cache[sid]


@lru_cache(maxsize=64)
def _load(path: str) -> Any:
    return load_schema(path)


def encode_wire(record: Mapping[str, Any], schema: Any, sid: int) -> bytes:
    """One record in Rubin's wire format (the framing, then the schemaless body)."""
    out = io.BytesIO()
    out.write(b"\x00" + int(sid).to_bytes(4, "big"))
    fastavro.schemaless_writer(out, schema, dict(record))
    return out.getvalue()


def decode_wire(data: bytes, store: SchemaStore) -> tuple[int, dict[str, Any]]:
    """(schema id, record) of one wire packet; raises :class:`PacketError` under a reason of
    :data:`DECODE_REASONS`."""
    if not data:
        raise PacketError("empty_input", "no byte")
    if data[0] != 0:
        raise PacketError("bad_framing", f"byte 0 is {data[0]}, not 0")
    if len(data) < 5:
        raise PacketError("truncated", f"{len(data)} byte(s): the 5-byte header is incomplete")
    sid = int.from_bytes(data[1:5], "big")
    schema = store.get(sid)
    body = io.BytesIO(data)
    body.seek(5)
    try:
        record = fastavro.schemaless_reader(body, schema, None)
    except EOFError as exc:
        raise PacketError("truncated", f"body ends early for schema {version_of(sid)}: {exc}") from exc
    except Exception as exc:  # fastavro raises several types for a body of another schema
        raise PacketError("bad_body", f"schema {version_of(sid)}: {type(exc).__name__}: {exc}") from exc
    if body.tell() != len(data):
        raise PacketError(
            "bad_body",
            f"{len(data) - body.tell()} byte(s) after the body of schema {version_of(sid)}: wrong schema id?",
        )
    return sid, record


def _long(buf: bytes, pos: int) -> tuple[int, int]:
    """An Avro long (zig-zag varint) at ``pos``; (value, next position). EOFError past the end."""
    shift = result = 0
    while True:
        if pos >= len(buf):
            raise EOFError("input ends inside a number")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def _container_end(buf: bytes, start: int) -> int:
    """Where the container starting at ``start`` ends (the next container's magic, or the end of the
    input). EOFError where it is truncated, ValueError where a sync marker is wrong."""
    pos = start + len(MAGIC)
    while True:  # the metadata map: blocks of (key, value) pairs, ended by a zero count
        n, pos = _long(buf, pos)
        if n == 0:
            break
        if n < 0:
            n = -n
            _, pos = _long(buf, pos)
        for _ in range(2 * n):
            size, pos = _long(buf, pos)
            pos += size
    sync = buf[pos : pos + 16]
    pos += 16
    if pos > len(buf):
        raise EOFError("input ends inside the container header")
    while pos < len(buf):
        if buf[pos : pos + 4] == MAGIC:  # a block count is never negative, so this is a new container
            return pos
        count, pos = _long(buf, pos)
        size, pos = _long(buf, pos)
        if count < 0 or size < 0:
            raise ValueError(f"block of {count} records in {size} bytes")
        pos += size
        if pos + 16 > len(buf):
            raise EOFError("input ends inside a block")
        if buf[pos : pos + 16] != sync:
            raise ValueError("sync marker does not match the header's")
        pos += 16
    return pos


def _check(record: Any, origin: str) -> tuple[str, dict[str, Any]] | Skip:
    if not isinstance(record, dict) or not isinstance(record.get("diaSource"), Mapping):
        return Skip("not_lsst", origin, "record has no diaSource")
    return origin, record


def _read_containers(buf: bytes, origin: str) -> Iterator[tuple[str, dict[str, Any]] | Skip]:
    start, k = 0, 0
    while start < len(buf):
        label = origin if start == 0 else f"{origin}#container{k}"
        if buf[start : start + 4] != MAGIC:
            yield Skip("bad_framing", label, f"bytes at offset {start} are not a container")
            return
        damage: str | None = None
        try:
            end = _container_end(buf, start)
        except EOFError as exc:
            end, damage = len(buf), "truncated"
            detail = str(exc)
        except ValueError as exc:
            end, damage = len(buf), "corrupt_container"
            detail = str(exc)
        n = 0
        try:
            for record in fastavro.reader(io.BytesIO(buf[start:end])):
                n += 1
                yield _check(record, label)
        except Exception as exc:  # fastavro raises several types for a damaged container
            damage = damage or "corrupt_container"
            detail = f"{type(exc).__name__}: {exc}"
        if damage:
            yield Skip(damage, label, f"after {n} packet(s): {detail}")
            return
        start, k = end, k + 1


def read_packets(
    stream: bytes | BinaryIO, origin: str, store: SchemaStore | None = None
) -> Iterator[tuple[str, dict[str, Any]] | Skip]:
    """Every alert in one input (bytes or an open binary file), container or wire, as ``(origin, record)``;
    a :class:`Skip` where a packet, or the rest of the input, cannot be read. ``store`` gives wire
    packets their schema (the installed package when None)."""
    buf = stream if isinstance(stream, (bytes, bytearray, memoryview)) else stream.read()
    buf = bytes(buf)
    if not buf:
        yield Skip("empty_input", origin, "no byte")
        return
    if buf[:4] == MAGIC:
        yield from _read_containers(buf, origin)
        return
    try:
        _, record = decode_wire(buf, store if store is not None else SchemaStore())
    except PacketError as exc:
        yield Skip(exc.reason, origin, str(exc))
        return
    yield _check(record, origin)
