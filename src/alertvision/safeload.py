"""Reading saved PyTorch files as tensors and plain data only: nothing in a file runs as code.

Every ``.pt`` file alertvision reads (a run's ``model.pt``, a training checkpoint, a pickled state
dict of pretrained weights) goes through :func:`load_tensors`, which uses PyTorch's weights-only
unpickler: it builds tensors, numbers, strings, None and lists, tuples, dicts and sets of them, and
refuses anything else (a class, a function: whatever could run code) before building it. What
alertvision saves is of those types only (numpy objects are saved as lists or tensors), so a file
it refuses is not one it wrote.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

#: the first bytes of a zip archive: what ``torch.save`` writes (a torch file is a zip of records)
ZIP_MAGIC = b"PK\x03\x04"


class RefusedFileError(ValueError):
    """A file that was not loaded; the message names it (``problem``) and says what to do (``fix``)."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}; {fix}")
        self.problem, self.fix = problem, fix


class UnsafeFileError(RefusedFileError):
    """A file holding objects other than tensors and plain data (code, possibly): refused unread."""


class TruncatedFileError(RefusedFileError):
    """A file that ends before its end (a copy or a write cut short)."""


class UnreadableFileError(RefusedFileError):
    """A file that is not a PyTorch file, or one damaged inside."""


def _reason(exc: BaseException) -> str:
    """What PyTorch's error says about the file, in a line (its refusal is a page of advice)."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)  # the function or class the file asked to build
    if found:
        return f"unsupported GLOBAL {found.group(1)}"
    found = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
    if found:
        return found.group(1).strip()
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def load_tensors(path: str | os.PathLike, *, fix: str, map_location: Any = "cpu") -> Any:
    """The content of the ``torch.save`` file at ``path``, built from tensors and plain data only.

    ``fix`` says what to do with a refused file (e.g. "delete it and train the run again"); it ends
    every message. Raises :class:`UnsafeFileError` for a file holding anything else (nothing in it is
    run), :class:`TruncatedFileError` for a file cut short, :class:`UnreadableFileError` for a file
    that is not a PyTorch file, and ``FileNotFoundError`` for a missing one.
    """
    import torch  # deferred: torch is heavy

    path = Path(path)
    with open(path, "rb") as fh:  # FileNotFoundError names the path
        head = fh.read(len(ZIP_MAGIC))
    if not head:
        raise TruncatedFileError(f"{path} is empty (truncated: a copy or write cut short)", fix)
    if head == ZIP_MAGIC:
        try:
            with zipfile.ZipFile(path):  # its directory is at the end: a file cut short has none
                pass
        except zipfile.BadZipFile as exc:
            raise TruncatedFileError(
                f"{path} is truncated ({path.stat().st_size} bytes, the end of the archive is missing: "
                "a copy or write cut short)",
                fix,
            ) from exc
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeFileError(
            f"{path} holds objects other than tensors and plain data ({_reason(exc)}): it was not loaded, "
            "since loading it could run code",
            fix,
        ) from exc
    except EOFError as exc:  # the legacy (non-zip) format read to its end before its last record
        raise TruncatedFileError(
            f"{path} is truncated (it ends before its last record: a copy or write cut short)", fix
        ) from exc
    except Exception as exc:  # noqa: BLE001 - PyTorch's reader raises RuntimeError, KeyError, ... for a bad file
        raise UnreadableFileError(f"{path} is not a readable PyTorch file ({_reason(exc)})", fix) from exc


def plain_data(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays as Python numbers and lists and paths as strings, in
    dicts, lists and tuples at any depth: what :func:`load_tensors` reads back (tensors stay)."""
    import numpy as np  # deferred: numpy is heavy

    if isinstance(value, Mapping):
        return {plain_data(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_data(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain_data(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value
