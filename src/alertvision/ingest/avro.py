"""Raw ZTF alert packets: .avro files, or .tar / .tar.gz archives of them as the public nightly
alert archive (ztf.uw.edu/alerts/public) ships them, plus a labels table -> the data contract.

Packets stream through :func:`alertvision.ingest.packets.write_packet_dataset`. A file or archive
that cannot be read to its end is skipped from the point where it breaks (the packets before that
are kept), counted under ``corrupt_packet`` / ``corrupt_archive`` in the manifest, and named in
the log; it never stops the run.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Mapping

from alertvision.contract import config_digest
from alertvision.ingest.labels import read_labels
from alertvision.ingest.packets import ROW_COLUMNS, Skip, write_packet_dataset

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
PacketItem = "tuple[str, dict[str, Any]] | Skip"


class AvroInputError(ValueError):
    """A configured packet path that does not exist or holds no packets."""


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def packet_files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """The .avro files and archives under ``paths`` (folders are searched recursively), sorted."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file()
                                and (f.suffix.lower() == ".avro" or _is_archive(f))))
        elif p.is_file():
            found.append(p)
        else:
            raise AvroInputError(f"packet path {p} does not exist (config key data.avro.path)")
    if not found:
        raise AvroInputError(f"no .avro file or .tar/.tar.gz archive under {', '.join(map(str, paths))} "
                             "(config key data.avro.path)")
    return found


def _read_avro(fh: BinaryIO, origin: str) -> Iterator[PacketItem]:
    import fastavro

    n = 0
    try:
        for record in fastavro.reader(fh):
            n += 1
            yield origin, record
    except Exception as exc:  # fastavro raises several types for a truncated or garbled file
        where = f" after {n} packet(s)" if n else ""
        yield Skip("corrupt_packet", origin, f"unreadable{where}: {type(exc).__name__}: {exc}")


def _read_archive(path: Path) -> Iterator[PacketItem]:
    try:
        with tarfile.open(path, mode="r|*") as tar:  # streamed: an archive is never held whole
            for member in tar:
                if not member.isfile() or not member.name.lower().endswith(".avro"):
                    continue
                data = tar.extractfile(member).read()
                yield from _read_avro(io.BytesIO(data), f"{path}:{member.name}")
    except (tarfile.TarError, EOFError, OSError) as exc:
        yield Skip("corrupt_archive", str(path), f"unreadable from here on: {type(exc).__name__}: {exc}")


def iter_packets(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> Iterator[PacketItem]:
    """Every packet under ``paths`` as ``(origin, packet)``, or a :class:`Skip` where reading fails."""
    for path in packet_files(paths):
        if _is_archive(path):
            yield from _read_archive(path)
        else:
            with open(path, "rb") as fh:
                yield from _read_avro(fh, str(path))


def ingest_avro(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Write the dataset of the labelled sources' packets under ``data.avro.path``; returns the manifest."""
    cfg = config["data"]["avro"]
    if not cfg.get("path") or not cfg.get("labels"):
        raise AvroInputError("data.source 'avro' needs data.avro.path (packets) and data.avro.labels "
                             "(a table of objectId, label, source_set)")
    labels, listings = read_labels(cfg["labels"], reserved=ROW_COLUMNS)
    files = packet_files(cfg["path"])
    n_archives = sum(map(_is_archive, files))
    log.info("reading %d packet file(s) and %d archive(s) for %d labelled sources",
             len(files) - n_archives, n_archives, len(labels))
    return write_packet_dataset(
        out_dir, iter_packets(files), labels, config["splits"], source="avro",
        digest=config_digest(cfg, config["splits"]), progress=progress,
        total=None if n_archives else len(files), history=cfg["history"], dims_peak_limit=cfg["dims_peak_limit"],
        extra={"inputs": {"packet_files": len(files) - n_archives, "archives": n_archives,
                          "labels": str(cfg["labels"]), "labelled_sources": int(len(labels))},
               "labels": listings},
    )
