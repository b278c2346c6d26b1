"""A fingerprint of a set of input files, rewritten only when their names, sizes or contents change.

Snakemake reruns a job when an input is newer than its outputs. A file replaced by one with other
bytes but an older modification time (``cp -p``, ``rsync -a``, ``tar x`` keep the original's) is not
newer, and would rerun nothing. The fingerprint file lists every input's name, size and SHA-256
digest; given as an input beside the files, it changes, and so gets a new modification time,
exactly when one of those does.

Hashing is paid once per file: a cache beside the fingerprint keeps each file's digest with its
size, modification and change times, inode and device, and a file whose stat is unchanged is not
read again. The change time (ctime) cannot be set back by ``cp -p`` and the like, so a replaced
file is always read again; a file merely touched is read again and, its digest unchanged, leaves
the fingerprint as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable

from alertvision.atomic import write_json, write_text

HEADER = "# name\tsize\tsha256\n"
READ_BYTES = 8 << 20


def file_digest(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(READ_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _stat_key(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


def cache_path(fingerprint: str | os.PathLike) -> Path:
    """Where the digest cache of ``fingerprint`` lives: a hidden file beside it."""
    fingerprint = Path(fingerprint)
    return fingerprint.with_name(f".{fingerprint.name}.cache.json")


def update_fingerprint(
    files: Iterable[str | os.PathLike],
    fingerprint: str | os.PathLike,
    before_hashing: Callable[[int, int], None] | None = None,
) -> bool:
    """Write ``fingerprint`` (name, size, SHA-256 of each of ``files``, sorted by name) when it differs from
    what the file holds; returns whether it was (re)written. ``before_hashing(n_files, n_bytes)`` is
    called before files whose stat changed since the last call are read."""
    fingerprint = Path(fingerprint)
    cache_file = cache_path(fingerprint)
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    cached = set(cache)
    stats = {}
    for name in sorted({str(f) for f in files}):
        try:
            stats[name] = os.stat(name)
        except OSError:  # gone since it was listed: the ingest reports what is missing
            continue
    stale = {name: st for name, st in stats.items() if cache.get(name, [None])[:-1] != _stat_key(st)}
    if stale and before_hashing is not None:
        before_hashing(len(stale), sum(st.st_size for st in stale.values()))
    for name, st in stale.items():
        try:
            digest = file_digest(name)
        except OSError as exc:  # unreadable: the ingest job says so; read again once it changes
            digest = f"unreadable ({exc.strerror})"
        cache[name] = [*_stat_key(st), digest]
    cache = {name: cache[name] for name in stats}
    if stale or set(cache) != cached:
        write_json(cache_file, cache)
    text = HEADER + "".join(f"{name}\t{entry[0]}\t{entry[-1]}\n" for name, entry in cache.items())
    try:
        if fingerprint.read_text() == text:
            return False
    except OSError:
        pass
    write_text(fingerprint, text)
    return True
