"""Atomic file writes: a temporary file in the target's folder, renamed into place on success.

Temporaries are named ``.{name}.{random}{suffix}.tmp`` beside their target; a job that starts cleans
those a killed predecessor left (:func:`clean_stale_temporaries`). Files get the permissions the
process's umask gives new files (``tempfile`` would make them private), so group members on a shared
cluster read datasets and models as any other output. A write that fails on a full disk says so,
naming the path and the space left.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

#: Free bytes under which a failed write is taken for a full disk (writers fail without saying so).
FULL_BELOW = 64 * 1024


class DiskFullError(OSError):
    """A write that failed because the file system holding the target is full."""


def _umask_by_setting() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: The process's umask at import, for systems without /proc (os.umask can only be read by setting it,
#: which would race with other threads creating files).
_UMASK_AT_IMPORT = _umask_by_setting()


def current_umask() -> int:
    """The process's umask now: from /proc/self/status (Linux; no side effect), else as at import."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _UMASK_AT_IMPORT


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether a failed write looks like a full disk: ENOSPC / EDQUOT, or next to no space left (libraries
    such as torch.save wrap the OS error in their own)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    free = _free_bytes(folder)
    return isinstance(exc, (OSError, RuntimeError)) and free is not None and free < FULL_BELOW


def temporaries(final: str | os.PathLike) -> list[Path]:
    """The temporaries of ``final`` in its folder (what an interrupted atomic write leaves)."""
    final = Path(final)
    if not final.parent.is_dir():
        return []
    return sorted(final.parent.glob(f".{final.name}.*.tmp"))


def clean_stale_temporaries(targets: Iterable[str | os.PathLike]) -> int:
    """Remove the temporaries a killed writer left beside each target (files or folders); returns how many.
    Call it when the job that owns the targets starts: nothing else writes them then."""
    removed = 0
    for target in targets:
        for tmp in temporaries(target):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def check_writable(folder: str | os.PathLike, what: str) -> Path:
    """Make ``folder`` and prove a file can be written there before any work starts; a read-only, full or
    forbidden folder raises one PermissionError naming ``what`` and the folder."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check.", suffix=".tmp"):
            pass
    except OSError as exc:
        raise PermissionError(
            f"cannot write {what} to {folder}: {exc.strerror or exc}; check the folder's permissions and "
            f"that its file system is writable and not full"
        ) from exc
    return folder


def clean_old_temporaries(folder: str | os.PathLike, older_than_s: float = 600.0) -> int:
    """Remove atomic-write temporaries (``.*.tmp`` files) in ``folder`` and below not touched for
    ``older_than_s``; returns how many. For folders several processes write at once (a shared cache):
    a live write renames its temporary within seconds, so only what a killed writer left is that old."""
    folder, removed, now = Path(folder), 0, time.time()
    if not folder.is_dir():
        return 0
    for tmp in folder.rglob(".*.tmp"):
        try:
            if tmp.is_file() and now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:  # renamed or removed by its writer meanwhile
            pass
    return removed


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` when the block succeeds.

    On any exception the temporary file is removed, so a crash never leaves a partial file under
    the final name; a full disk raises :class:`DiskFullError` naming ``final``. ``suffix`` defaults to
    the final name's suffix, for writers that look at it. The file gets the umask's permissions.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{final.name}.",
        suffix=(final.suffix if suffix is None else suffix) + ".tmp",
        dir=final.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, final)
    except BaseException as exc:
        full = _disk_full(exc, final.parent)
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if full:
            raise DiskFullError(
                errno.ENOSPC,
                f"the disk is full: could not write {final} "
                f"({_free_bytes(final.parent) or 0:,} bytes free in {final.parent} after removing "
                f"the partial file); free space or point the output elsewhere",
            ) from exc
        raise


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; it replaces ``final`` when the block succeeds.

    On any exception the temporary folder is removed, so a crash never leaves a partial folder
    under the final name (nor removes an existing one).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it private; the folder is shared like any other output
    try:
        yield tmp
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np  # deferred: numpy is heavy

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_parquet(path: str | os.PathLike, df: "Any") -> None:
    """Write a pandas DataFrame to parquet atomically (no index)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_csv(path: str | os.PathLike, df: "Any") -> None:
    """Write a pandas DataFrame to CSV atomically (no index)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
