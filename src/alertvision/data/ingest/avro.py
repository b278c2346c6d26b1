"""Raw ZTF alert packets: .avro files, or .tar / .tar.gz archives of them as the public nightly
alert archive (ztf.uw.edu/alerts/public) ships them, plus a labels table -> the data contract.

Packets stream through :func:`alertvision.data.ingest.packets.write_packet_dataset`. A packet file that
cannot be read to its end is skipped from the point where it breaks (the packets before that are
kept) and counted under ``corrupt_packet``; an archive is read past its damage by
:mod:`alertvision.data.ingest.archive`, each damaged region counted under ``corrupt_archive`` and each
archive's totals in the manifest's ``archives_read``. All are named in the log; none stops the run.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Mapping

from alertvision.data.contract import config_digest
from alertvision.data.ingest.archive import Member, read_archive
from alertvision.data.ingest.labels import read_labels
from alertvision.data.ingest.packets import ROW_COLUMNS, InputReport, Skip, write_packet_dataset

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
PacketItem = "tuple[str, dict[str, Any]] | Skip | InputReport"


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
            found.extend(
                sorted(f for f in p.rglob("*") if f.is_file() and (f.suffix.lower() == ".avro" or _is_archive(f)))
            )
        elif p.is_file():
            found.append(p)
        else:
            raise AvroInputError(f"packet path {p} does not exist (config key data.avro.path)")
    if not found:
        raise AvroInputError(
            f"no .avro file or .tar/.tar.gz archive under {', '.join(map(str, paths))} (config key data.avro.path)"
        )
    return found


def read_avro(fh: BinaryIO, origin: str) -> Iterator[PacketItem]:
    """The packets of one Avro object container file open in ``fh`` (``origin`` names it), then a
    ``corrupt_packet`` :class:`Skip` where it cannot be read to its end."""
    import fastavro

    n = 0
    try:
        for record in fastavro.reader(fh):
            n += 1
            yield origin, record
    except Exception as exc:  # fastavro raises several types for a truncated or garbled file
        where = f" after {n} packet(s)" if n else ""
        yield Skip("corrupt_packet", origin, f"unreadable{where}: {type(exc).__name__}: {exc}")


def _is_avro(name: str) -> bool:
    return name.lower().endswith(".avro")


def _read_archive(path: Path) -> Iterator[PacketItem]:
    """The packets of an archive's .avro members, a skip per damaged region, then the archive's report
    (see :mod:`alertvision.data.ingest.archive`)."""
    try:
        with open(path, "rb") as fh:
            for item in read_archive(fh, str(path), wanted=_is_avro):
                if isinstance(item, Member):
                    yield from read_avro(io.BytesIO(item.data), f"{path}:{item.name}")
                    continue
                if isinstance(item, InputReport) and item.counts["damaged_regions"]:
                    counts = ", ".join(f"{key} {n}" for key, n in item.counts.items())
                    log.warning("archive %s is damaged: %s", path, counts)
                yield item
    except OSError as exc:
        yield Skip("corrupt_archive", str(path), f"unreadable from here on: {type(exc).__name__}: {exc}")


def iter_packets(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> Iterator[PacketItem]:
    """Every packet under ``paths`` as ``(origin, packet)``, a :class:`Skip` where reading fails, and an
    :class:`InputReport` after each archive."""
    for path in packet_files(paths):
        if _is_archive(path):
            yield from _read_archive(path)
        else:
            with open(path, "rb") as fh:
                yield from read_avro(fh, str(path))


def ingest_avro(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Write the dataset of the labelled sources' packets under ``data.avro.path``; returns the manifest."""
    cfg = config["data"]["avro"]
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
        digest=config_digest(cfg, config["splits"]),
        progress=progress,
        total=None if n_archives else len(files),
        history=cfg["history"],
        dims_peak_limit=cfg["dims_peak_limit"],
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
