"""The data contract: what a dataset folder (``data/<dataset>/`` of the results root) holds and how it is written.

- ``alerts.parquet``: one row per alert; row i describes ``images.npy[i]``.
- ``images.npy``: float32 (N, C, S, S), C order, always opened memory-mapped; ZTF's S is 63 and C 3, another
  survey's come from its plugin's triplet (the manifest's ``image_shape``).
- ``manifest.json``: survey, source, version, creation time, counts per subset and split, config digest.

The metadata feature columns are the survey's (:data:`METADATA_FEATURES` for ZTF, the manifest's
``metadata_features`` for another survey); the id and raw columns are shared (for LSST: ``objectId`` is
the diaObjectId, ``jd`` the midpointMjdTai as a Julian date, ``fid`` the band index, ``magpsf`` the PSF
magnitude; see docs/lsst.md).

A dataset is written into a temporary folder inside its folder and its files renamed into place
when it is complete (:func:`building_dataset`): a failed write leaves the previous dataset whole.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd

from alertvision import __version__
from alertvision.atomic import (
    DiskFullError,
    atomic_path,
    check_writable,
    clean_stale_temporaries,
    write_json,
    write_parquet,
)
from alertvision.data import ALERTS_FILE, DATASET_FILES, IMAGES_FILE, MANIFEST_FILE
from alertvision.data.features import METADATA_FEATURES

IMAGE_SIZE = 63

SPLITS = ("train", "val", "test")
#: Fields the trigger policies and the figures need, beside the 25 features.
RAW_FIELDS = ("magpsf", "fid", "isdiffpos", "ra", "dec")
ID_COLUMNS = ("alert_id", "candid", "objectId", "jd", "label", "source_set", "split")
#: Columns every alerts.parquet has, in this order; sources may add more after them.
REQUIRED_COLUMNS = tuple(dict.fromkeys((*ID_COLUMNS, *METADATA_FEATURES, *RAW_FIELDS)))


def required_columns(features: tuple[str, ...] = METADATA_FEATURES) -> tuple[str, ...]:
    """The columns every alerts table of a survey with these metadata ``features`` has, in order."""
    return tuple(dict.fromkeys((*ID_COLUMNS, *features, *RAW_FIELDS)))


def manifest_features(manifest: Mapping[str, Any]) -> tuple[str, ...]:
    """The metadata feature columns of a dataset in model order: its manifest's ``metadata_features`` (another
    survey's), else ZTF's :data:`METADATA_FEATURES` (a ZTF manifest names none)."""
    return tuple(manifest.get("metadata_features") or METADATA_FEATURES)


class ContractError(ValueError):
    """A dataset folder or table that breaks the data contract."""


def alert_ids(object_ids: pd.Series, jds: pd.Series, fids: pd.Series) -> np.ndarray:
    """Stable int64 alert ids from (objectId, jd, fid), the key of an alert within a source.

    The id is a 63-bit BLAKE2b digest, so it does not depend on row order or on which other alerts
    are in the dataset: a rerun, or another data source holding the same alert, gives the same id.
    """
    out = np.empty(len(object_ids), dtype=np.int64)
    for i, (oid, jd, fid) in enumerate(zip(object_ids, jds, fids)):
        key = f"{oid}|{float(jd):.6f}|{int(fid)}".encode()
        out[i] = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1
    return out


def config_digest(*blocks: Any) -> str:
    """SHA-256 of the canonical JSON of the config blocks a file was made from."""
    text = json.dumps(blocks, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def validate_alerts(df: pd.DataFrame, features: tuple[str, ...] = METADATA_FEATURES) -> pd.DataFrame:
    """Check the contract's columns and invariants (``features``: the survey's metadata features); return the
    table with contract dtypes."""
    required = required_columns(tuple(features))
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ContractError(f"alerts table lacks column(s): {', '.join(missing)}")
    if df["alert_id"].duplicated().any():
        dup = df.loc[df["alert_id"].duplicated(), "alert_id"].iloc[0]
        raise ContractError(f"alert_id {dup} is not unique")
    bad_split = ~df["split"].isin(SPLITS)
    if bad_split.any():
        raise ContractError(f"split must be one of {SPLITS}, got {df.loc[bad_split, 'split'].iloc[0]!r}")
    bad_label = ~df["label"].isin([0, 1])
    if bad_label.any():
        raise ContractError(f"label must be 0 or 1, got {df.loc[bad_label, 'label'].iloc[0]!r}")
    shared = df.groupby("objectId")["split"].nunique()
    if (shared > 1).any():
        raise ContractError(f"source {shared[shared > 1].index[0]} appears in more than one split")
    check_source_labels(df)
    out = df.copy()
    out["alert_id"] = out["alert_id"].astype(np.int64)
    out["label"] = out["label"].astype(np.int8)
    out["jd"] = out["jd"].astype(np.float64)
    out["fid"] = out["fid"].astype(np.int8)
    for col in features:
        out[col] = out[col].astype(np.float32)
    out["magpsf"] = out["magpsf"].astype(np.float32)
    ordered = list(required) + [c for c in out.columns if c not in required]
    return out[ordered].reset_index(drop=True)


def check_source_labels(df: pd.DataFrame, origin: str = "alerts table") -> None:
    """Every alert of a source has the source's label; raise naming the sources whose label varies."""
    varying = df.groupby("objectId", sort=True)["label"].nunique()
    varying = varying[varying > 1]
    if len(varying):
        raise ContractError(
            f"{origin}: the label varies within {len(varying)} source(s), e.g. "
            f"{', '.join(map(str, varying.index[:5]))}; a source has one label (fix the table)"
        )


def _npy_header(shape: tuple[int, ...], dtype: np.dtype, total: int = 128) -> bytes:
    """An .npy v1.0 header of exactly ``total`` bytes, so it can be rewritten in place."""
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    body = repr(d).encode("latin1")
    pad = total - 10 - len(body) - 1
    if pad < 0:
        raise ValueError(f"shape {shape} does not fit an .npy header of {total} bytes")
    header = body + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


class ImageArrayWriter:
    """Stream images into an .npy file without holding them in memory.

    Images are appended in batches; the header is written with the final count on ``close``. The
    file lives under a temporary name until then, so a crash leaves nothing under the final name.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        image_shape: tuple[int, ...] = (3, IMAGE_SIZE, IMAGE_SIZE),
        dtype: Any = np.float32,
    ):
        self.path = Path(path)
        self.image_shape = tuple(image_shape)
        self.dtype = np.dtype(dtype)
        self.count = 0
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._fh = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._fh.write(_npy_header((0, *self.image_shape), self.dtype))

    def append(self, images: np.ndarray) -> None:
        """Append a batch (n, *image_shape); it is converted to the writer's dtype, C order."""
        images = np.asarray(images)
        if images.ndim == len(self.image_shape):
            images = images[None]
        if images.shape[1:] != self.image_shape:
            raise ContractError(f"image batch of shape {images.shape[1:]}, expected {self.image_shape}")
        if not len(images):  # an empty batch: nothing to write (memoryview cannot cast a view with zeros)
            return
        self._fh.write(memoryview(np.ascontiguousarray(images, dtype=self.dtype)).cast("B"))  # no extra copy
        self.count += len(images)

    def close(self) -> None:
        """Write the final header and rename the file into place."""
        self._fh.seek(0)
        self._fh.write(_npy_header((self.count, *self.image_shape), self.dtype))
        self._fh.close()
        self._ctx.__exit__(None, None, None)

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop the partial file; a full disk is raised as :class:`DiskFullError` naming the file."""
        try:
            self._fh.close()
        except OSError:  # flushing the buffer of a file on a full disk fails too: it is dropped anyway
            pass
        exc = exc or RuntimeError("aborted")
        try:
            self._ctx.__exit__(type(exc), exc, None)
        except DiskFullError:
            raise
        except BaseException:  # noqa: BLE001 - atomic_path re-raises what we hand it
            pass

    def __enter__(self) -> "ImageArrayWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self.abort(exc)


def compact_images(path: str | os.PathLike, keep: np.ndarray, chunk: int = 2048) -> int:
    """Rewrite an image array keeping only the rows where ``keep`` is True, streamed ``chunk`` rows at a
    time from the memory-mapped file into a new one renamed over it; returns the rows kept."""
    source = np.load(path, mmap_mode="r")
    keep = np.asarray(keep, dtype=bool)
    if len(keep) != len(source):
        raise ContractError(f"{path}: a mask of {len(keep)} rows for {len(source)} images")
    with ImageArrayWriter(path, source.shape[1:], source.dtype) as writer:
        for start in range(0, len(source), chunk):
            mask = keep[start : start + chunk]
            if mask.any():
                writer.append(source[start : start + chunk][mask])
    del source
    return writer.count


def counts_by_subset_split(df: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Alert counts as {source_set: {split: n}}."""
    out: dict[str, dict[str, int]] = {}
    for (subset, split), n in df.groupby(["source_set", "split"]).size().items():
        out.setdefault(str(subset), {})[str(split)] = int(n)
    return out


#: A dataset is built in ``.build.<random>.tmp`` inside its folder (see :func:`building_dataset`).
BUILD_FOLDER = "build"


@contextlib.contextmanager
def building_dataset(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty folder to write a dataset's files into; when the block succeeds they replace those
    of ``directory``, and when it fails ``directory`` is left as it was: a failed re-ingest (a mistyped
    path, a bad table, a full disk) keeps the previous dataset whole.

    The folder is a hidden temporary inside ``directory`` (one file system: the files move by rename).
    The manifest, the mark of a complete dataset, is removed before the files move and moved last, so
    a crash between the renames leaves a folder :func:`open_dataset` refuses, never a mix of two
    datasets. What a killed build left is removed first.
    """
    directory = check_writable(directory, "the dataset")
    clean_stale_temporaries([*(directory / name for name in DATASET_FILES), directory / BUILD_FOLDER])
    build = Path(tempfile.mkdtemp(prefix=f".{BUILD_FOLDER}.", suffix=".tmp", dir=directory))
    try:
        yield build
        missing = [name for name in DATASET_FILES if not (build / name).is_file()]
        if missing:
            raise ContractError(f"the dataset built for {directory} lacks {', '.join(missing)}")
        (directory / MANIFEST_FILE).unlink(missing_ok=True)
        for name in (ALERTS_FILE, IMAGES_FILE, MANIFEST_FILE):
            os.replace(build / name, directory / name)
    finally:
        shutil.rmtree(build, ignore_errors=True)


def write_manifest(
    directory: str | os.PathLike,
    df: pd.DataFrame,
    *,
    dataset: str,
    source: str,
    synthetic: bool,
    digest: str,
    extra: Mapping[str, Any] | None = None,
    survey: str = "ztf",
) -> dict:
    """Write ``manifest.json`` for a dataset whose alerts are ``df`` (packets of ``survey``)."""
    manifest = {
        "survey": survey,
        "dataset": dataset,
        "source": source,
        "synthetic": bool(synthetic),
        "alertvision_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config_digest": digest,
        "n_alerts": int(len(df)),
        "n_sources": int(df["objectId"].nunique()),
        "alerts": counts_by_subset_split(df),
        "sources": {
            str(subset): {str(split): int(n) for split, n in g.groupby("split")["objectId"].nunique().items()}
            for subset, g in df.groupby("source_set")
        },
    }
    if synthetic:
        manifest["note"] = "SYNTHETIC DATA: simulated alerts, not observations."
    manifest.update(dict(extra or {}))
    write_json(Path(directory) / MANIFEST_FILE, manifest)
    return manifest


def write_alerts(
    directory: str | os.PathLike, df: pd.DataFrame, features: tuple[str, ...] = METADATA_FEATURES
) -> pd.DataFrame:
    """Validate and write ``alerts.parquet`` (``features``: the survey's); return the table as written."""
    df = validate_alerts(df, features)
    write_parquet(Path(directory) / ALERTS_FILE, df)
    return df


@dataclass(frozen=True)
class Dataset:
    """An opened dataset folder: the alerts table and the memory-mapped image array."""

    directory: Path
    alerts: pd.DataFrame
    images: np.ndarray  # np.memmap, read-only
    manifest: dict

    @property
    def synthetic(self) -> bool:
        return bool(self.manifest.get("synthetic", False))

    @property
    def metadata_features(self) -> tuple[str, ...]:
        """The metadata feature columns in model order (:func:`manifest_features`)."""
        return manifest_features(self.manifest)


def open_dataset(directory: str | os.PathLike) -> Dataset:
    """Open a dataset folder; images are memory-mapped read-only, never loaded whole."""
    directory = Path(directory)
    for name in DATASET_FILES:
        if not (directory / name).is_file():
            raise ContractError(f"{directory / name} is missing: is {directory} a dataset folder?")
    alerts = pd.read_parquet(directory / ALERTS_FILE)
    images = np.load(directory / IMAGES_FILE, mmap_mode="r")
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    size = int((manifest.get("image_shape") or [3, IMAGE_SIZE, IMAGE_SIZE])[-1])
    if images.dtype != np.float32 or images.ndim != 4 or images.shape[-2:] != (size, size):
        raise ContractError(
            f"{directory / IMAGES_FILE}: expected float32 (N, C, {size}, {size}), got {images.dtype} {images.shape}"
        )
    if len(alerts) != images.shape[0]:
        raise ContractError(f"{directory}: {len(alerts)} alerts but {images.shape[0]} images")
    return Dataset(directory, alerts, images, manifest)
