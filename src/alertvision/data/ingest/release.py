"""The public BTSbot training set (Zenodo record 10839691) -> the data contract.

The release holds, per split (train, val, test), ``{split}_triplets_{tag}.npy`` (float64,
N x 63 x 63 x 3, NHWC, channels science / reference / difference, already normalised) and
``{split}_cand_{tag}.csv`` (row i describes triplet i). They come extracted in a folder
(``data.release.path``) or packed in ``images_v10.zip`` and ``metadata_v10.zip`` (in that folder, or
named by ``data.release.images_zip`` / ``data.release.metadata_zip``).

The candidate tables are read and checked first; nothing of the 19.6 GB of images is read before
every check passed. The images then stream split by split, ``chunk_alerts`` alerts at a time:
extracted files through a memory-mapped window per chunk (unmapped before the next one, so the
pages read do not pile up in the process's resident memory), zip members (possibly deflated, so
not mappable) as sequential byte blocks after their .npy header. Each block becomes float32 NCHW
and goes straight to ``images.npy``: peak memory is a few chunks, whatever the release's size.

The release's own split, ``new_drb`` and derived features are kept as they are. Alerts repeated on
(objectId, jd, fid) keep their first row, and a triplet holding a NaN or infinite pixel is dropped
with its row (as BTSbot drops NaN triplets before training); both are counted in the manifest's
``skipped``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from alertvision.data.contract import (
    IMAGE_SIZE,
    IMAGES_FILE,
    REQUIRED_COLUMNS,
    SPLITS,
    ContractError,
    ImageArrayWriter,
    alert_ids,
    building_dataset,
    check_source_labels,
    config_digest,
    write_alerts,
    write_manifest,
)
from alertvision.data.features import DERIVED_FEATURES

log = logging.getLogger(__name__)

ZENODO_RECORD = "10839691"
#: The release's zip files, by kind of file.
ZIP_NAMES = {"images": "images_v10.zip", "metadata": "metadata_v10.zip"}
#: Shape of one triplet in the release: 63 x 63 pixels, science / reference / difference last.
TRIPLET_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 3)
#: The header of the release's candidate tables (the ZTF candidate fields and BTSbot's derived
#: features); the contract needs only some of them (:data:`NEEDED_COLUMNS`).
CANDIDATE_HEADER = (
    "objectId",
    "jd",
    "label",
    "fid",
    "diffmaglim",
    "programid",
    "candid",
    "isdiffpos",
    "field",
    "ra",
    "dec",
    "magpsf",
    "sigmapsf",
    "chipsf",
    "magap",
    "sigmagap",
    "distnr",
    "magnr",
    "chinr",
    "sharpnr",
    "sky",
    "magdiff",
    "fwhm",
    "classtar",
    "mindtoedge",
    "seeratio",
    "nneg",
    "nbad",
    "magapbig",
    "sigmagapbig",
    "sgmag1",
    "srmag1",
    "simag1",
    "szmag1",
    "sgscore1",
    "distpsnr1",
    "ndethist",
    "ncovhist",
    "jdstarthist",
    "scorr",
    "sgmag2",
    "srmag2",
    "simag2",
    "szmag2",
    "sgscore2",
    "distpsnr2",
    "sgmag3",
    "srmag3",
    "simag3",
    "szmag3",
    "sgscore3",
    "distpsnr3",
    "nmtchps",
    "jdstartref",
    "dsnrms",
    "ssnrms",
    "magzpsci",
    "magzpsciunc",
    "magzpscirms",
    "clrcoeff",
    "clrcounc",
    "neargaia",
    "neargaiabright",
    "maggaia",
    "maggaiabright",
    "exptime",
    "drb",
    "acai_h",
    "acai_v",
    "acai_o",
    "acai_n",
    "acai_b",
    "new_drb",
    "peakmag",
    "maxmag",
    "peakmag_so_far",
    "maxmag_so_far",
    "age",
    "days_since_peak",
    "days_to_peak",
    "nnotdet",
)
#: Columns the release adds to the candidate fields (any other extra column is allowed too).
RELEASE_COLUMNS = ("source_set", "split", "is_SN", "near_threshold", "is_rise")
#: Columns of the contract the candidate tables must have (alert_id is made here).
NEEDED_COLUMNS = tuple(c for c in REQUIRED_COLUMNS if c != "alert_id")
#: Bytes asked of a zip member per read (a chunk is filled by several).
READ_BYTES = 8 << 20
#: Duplicated alerts named in the log, at most.
LOG_FIRST = 5


class ReleaseError(ContractError):
    """Release files that are missing, or that break one of the release's invariants."""


def release_file_name(kind: str, split: str, tag: str) -> str:
    """The name of a release file: ``{split}_triplets_{tag}.npy`` or ``{split}_cand_{tag}.csv``."""
    return f"{split}_triplets_{tag}.npy" if kind == "images" else f"{split}_cand_{tag}.csv"


@dataclass(frozen=True)
class ReleaseFile:
    """One file of the release: extracted on disk, or a member of one of the two zips."""

    name: str
    path: Path
    member: str | None = None  # the member's name in the zip at ``path``; None for an extracted file

    def __str__(self) -> str:
        return str(self.path) if self.member is None else f"{self.path}:{self.member}"

    @contextlib.contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        """The file opened for binary reading (a zip member decompresses as it is read)."""
        if self.member is None:
            with open(self.path, "rb") as fh:
                yield fh
        else:
            with zipfile.ZipFile(self.path) as zf, zf.open(self.member) as fh:
                yield fh


@dataclass(frozen=True)
class NpyInfo:
    """What the header of a triplet file says: shape, dtype, and where the data starts."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int

    @property
    def row_bytes(self) -> int:
        """Bytes of one triplet."""
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


# ---------------------------------------------------------------------------------------------- locating


def locate_release(cfg: Mapping[str, Any]) -> dict[str, dict[str, ReleaseFile]]:
    """The release's files as ``{kind: {split: file}}`` (kind: images, metadata) for ``data.release``.

    An explicit ``images_zip`` / ``metadata_zip`` wins; otherwise each file is taken extracted from
    ``path`` where it is there, else from the zip of its kind in ``path``.
    """
    return {kind: _locate_kind(cfg, kind) for kind in ZIP_NAMES}


def _locate_kind(cfg: Mapping[str, Any], kind: str) -> dict[str, ReleaseFile]:
    names = {split: release_file_name(kind, split, cfg["tag"]) for split in SPLITS}
    zip_key = f"{kind}_zip"
    if cfg.get(zip_key):
        zip_path = Path(cfg[zip_key]).expanduser()
        if not zip_path.is_file():
            raise ReleaseError(
                f"config key data.release.{zip_key}: {zip_path} not found (the release's {ZIP_NAMES[kind]})"
            )
        return _zip_members(zip_path, names, zip_key)
    folder = _release_folder(cfg, zip_key)
    found = {split: ReleaseFile(name, folder / name) for split, name in names.items() if (folder / name).is_file()}
    rest = {split: name for split, name in names.items() if split not in found}
    if rest:
        zip_path = folder / ZIP_NAMES[kind]
        if not zip_path.is_file():
            raise ReleaseError(
                f"{folder} holds neither {', '.join(rest.values())} nor {ZIP_NAMES[kind]}: point config key "
                f"data.release.path at the folder holding the release's files, or set data.release.{zip_key} "
                f"to the release's {ZIP_NAMES[kind]} (check data.release.tag, now {cfg['tag']!r}, too)"
            )
        found.update(_zip_members(zip_path, rest, f"path ({ZIP_NAMES[kind]})"))
    return {split: found[split] for split in SPLITS}


def _release_folder(cfg: Mapping[str, Any], zip_key: str) -> Path:
    if not cfg.get("path"):
        raise ReleaseError(
            f"config key data.release.path is not set: point it at the folder holding the release's "
            f"files (or {', '.join(ZIP_NAMES.values())}), or set data.release.{zip_key}"
        )
    folder = Path(cfg["path"]).expanduser()
    if not folder.is_dir():
        raise ReleaseError(
            f"config key data.release.path: {folder} is not a folder (download images_v10.zip and "
            f"metadata_v10.zip of the BTSbot v10 training set, Zenodo record 10839691, into it)"
        )
    return folder


def _zip_members(zip_path: Path, names: Mapping[str, str], key: str) -> dict[str, ReleaseFile]:
    """The zip members named ``names`` (matched on the file name, whatever folder they sit in)."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = [m for m in zf.namelist() if not m.endswith("/")]
    except zipfile.BadZipFile as exc:
        raise ReleaseError(f"{zip_path} (config key data.release.{key}) is not a readable zip: {exc}") from exc
    out = {}
    for split, name in names.items():
        matches = sorted((m for m in members if PurePosixPath(m).name == name), key=len)
        if not matches:
            raise ReleaseError(
                f"{zip_path} (config key data.release.{key}) has no member {name} "
                f"(it holds {', '.join(members[:8]) or 'nothing'}{' ...' if len(members) > 8 else ''}); "
                f"check data.release.tag"
            )
        out[split] = ReleaseFile(name, zip_path, matches[0])
    return out


# ---------------------------------------------------------------------------------------------- checking


def read_candidates(file: ReleaseFile) -> pd.DataFrame:
    """One split's candidate table, as the release wrote it (candid stays the release's float)."""
    with file.open() as fh:
        try:
            return pd.read_csv(fh, low_memory=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ReleaseError(f"{file}: not a readable CSV table: {exc}") from exc


def check_candidates(df: pd.DataFrame, split: str, origin: str) -> None:
    """Check one split's table: the contract's columns, keys present, labels 0 / 1, its own split only."""
    missing = [c for c in NEEDED_COLUMNS if c not in df.columns]
    if missing:
        raise ReleaseError(f"{origin} lacks column(s) the data contract needs: {', '.join(missing)}")
    for col in ("objectId", "jd", "fid"):
        bad = df[col].isna()
        if bad.any():
            raise ReleaseError(f"{origin}: {int(bad.sum())} row(s) without {col} (first at CSV row {_row(bad)})")
    labels = pd.to_numeric(df["label"], errors="coerce")
    bad = ~labels.isin([0, 1])
    if bad.any():
        raise ReleaseError(
            f"{origin}: label must be 0 or 1, got {_first(df['label'], bad)!r} at CSV row {_row(bad)} "
            f"({int(bad.sum())} such row(s))"
        )
    bad = df["split"].astype(str) != split
    if bad.any():
        raise ReleaseError(
            f"{origin}: the split column says {_first(df['split'], bad)!r} at CSV row {_row(bad)} "
            f"({int(bad.sum())} such row(s)) in the {split} file"
        )


def _first(values: pd.Series, mask: pd.Series) -> Any:
    """The first value of ``values`` where ``mask`` holds, as a plain Python value (for messages)."""
    value = values[mask].iloc[0]
    return value.item() if isinstance(value, np.generic) else value


def _row(mask: pd.Series) -> int:
    """The CSV line (1 is the header) of the first True of ``mask``."""
    return int(np.flatnonzero(mask.to_numpy())[0]) + 2


def check_disjoint_sources(tables: Mapping[str, pd.DataFrame]) -> None:
    """No source (objectId) may have alerts in two splits."""
    splits_of = pd.concat([t[["objectId"]].assign(split=s) for s, t in tables.items()], ignore_index=True)
    n_splits = splits_of.drop_duplicates().groupby("objectId")["split"].agg(sorted)
    shared = n_splits[n_splits.map(len) > 1]
    if len(shared):
        examples = ", ".join(f"{oid} ({' & '.join(s)})" for oid, s in shared.head(LOG_FIRST).items())
        raise ReleaseError(f"{len(shared)} source(s) appear in more than one split, e.g. {examples}")


def read_npy_header(fh: IO[bytes], origin: str) -> NpyInfo:
    """The header of the .npy file open at ``fh`` (left at the start of the data)."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ReleaseError(f"{origin}: .npy format version {version} is not supported (1.0 or 2.0)")
    except ValueError as exc:
        if isinstance(exc, ReleaseError):
            raise
        raise ReleaseError(f"{origin}: not a readable .npy file: {exc}") from exc
    return NpyInfo(tuple(shape), np.dtype(dtype), bool(fortran_order), fh.tell())


def inspect_triplets(file: ReleaseFile) -> NpyInfo:
    """Read a triplet file's header (only the header) and check its layout and, on disk, its size."""
    with file.open() as fh:
        info = read_npy_header(fh, str(file))
    if len(info.shape) != 4 or info.shape[1:] != TRIPLET_SHAPE:
        raise ReleaseError(f"{file}: triplets of shape {info.shape}, expected (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3)")
    if info.dtype.kind != "f":
        raise ReleaseError(f"{file}: triplets of dtype {info.dtype}, expected floating point (float64)")
    if info.fortran_order:
        raise ReleaseError(f"{file}: Fortran-ordered array; the release's triplets are C-ordered")
    if file.member is None:
        need = info.offset + info.shape[0] * info.row_bytes
        size = file.path.stat().st_size
        if size < need:
            raise ReleaseError(f"{file}: truncated, {size} bytes where its header promises {need}")
    return info


def check_rows_match(info: NpyInfo, n_rows: int, images: ReleaseFile, metadata: ReleaseFile) -> None:
    """Every candidate row needs its triplet, and every triplet its row."""
    if info.shape[0] != n_rows:
        raise ReleaseError(
            f"{metadata} has {n_rows} rows but {images} holds {info.shape[0]} triplets: "
            f"row i of the table must describe triplet i"
        )


# ---------------------------------------------------------------------------------------------- the table


def release_table(tables: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """All splits' rows in file order with their alert_id, and per split the mask of rows to keep.

    Rows repeating an earlier (objectId, jd, fid) are not kept (the first one stays).
    """
    df = pd.concat([tables[s] for s in SPLITS], ignore_index=True)
    if "alert_id" in df.columns:
        log.warning("the release has an alert_id column; it is replaced by the contract's alert_id")
        df = df.drop(columns="alert_id")
    df.insert(0, "alert_id", alert_ids(df["objectId"], df["jd"], df["fid"]))
    duplicated = df["alert_id"].duplicated(keep="first").to_numpy()
    for _, row in df[duplicated].head(LOG_FIRST).iterrows():
        log.warning(
            "dropped a repeated alert: %s at jd %.6f fid %s (split %s)",
            row["objectId"],
            row["jd"],
            row["fid"],
            row["split"],
        )
    bounds = np.cumsum([0] + [len(tables[s]) for s in SPLITS])
    keep = {s: ~duplicated[bounds[i] : bounds[i + 1]] for i, s in enumerate(SPLITS)}
    return df, keep


# ---------------------------------------------------------------------------------------------- images


def to_contract_layout(block: np.ndarray) -> np.ndarray:
    """Triplets (n, 63, 63, 3) of any float dtype -> float32 (n, 3, 63, 63), C order."""
    return np.asarray(block.transpose(0, 3, 1, 2).astype(np.float32, order="C"))


def iter_triplet_blocks(file: ReleaseFile, info: NpyInfo, chunk: int) -> Iterator[np.ndarray]:
    """The triplets of ``file``, ``chunk`` at a time, in the contract's layout (float32 NCHW)."""
    if file.member is None:
        yield from _mapped_blocks(file.path, info, chunk)
    else:
        yield from _streamed_blocks(file, info, chunk)


def _mapped_blocks(path: Path, info: NpyInfo, chunk: int) -> Iterator[np.ndarray]:
    """Map one window of ``chunk`` triplets at a time, convert it, and unmap it before the next."""
    n = info.shape[0]
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        window = np.memmap(
            path,
            dtype=info.dtype,
            mode="r",
            offset=info.offset + start * info.row_bytes,
            shape=(count, *info.shape[1:]),
        )
        block = to_contract_layout(window)
        del window  # unmaps: the pages read leave the resident set
        yield block


def _streamed_blocks(file: ReleaseFile, info: NpyInfo, chunk: int) -> Iterator[np.ndarray]:
    """Read a zip member sequentially, ``chunk`` triplets of bytes at a time, after its header."""
    n = info.shape[0]
    buffer = np.empty(min(chunk, n) * info.row_bytes, dtype=np.uint8)  # reused: one chunk of raw bytes
    with file.open() as fh:
        read_npy_header(fh, str(file))
        for start in range(0, n, chunk):
            count = min(chunk, n - start)
            got = read_into(fh, buffer[: count * info.row_bytes])
            if got != count * info.row_bytes:
                raise ReleaseError(f"{file}: truncated after {start + got // info.row_bytes} of {n} triplets")
            yield to_contract_layout(buffer[:got].view(info.dtype).reshape(count, *info.shape[1:]))


def read_into(fh: IO[bytes], out: np.ndarray, piece: int = READ_BYTES) -> int:
    """Fill ``out`` (uint8) from ``fh`` in reads of at most ``piece`` bytes; returns the bytes read.

    A zip member's ``read(n)`` holds about three times n while it decompresses and joins; small
    reads into one reused buffer keep the overhead to a few pieces.
    """
    view = memoryview(out).cast("B")
    pos = 0
    while pos < len(view):
        data = fh.read(min(piece, len(view) - pos))
        if not data:
            break
        view[pos : pos + len(data)] = data
        pos += len(data)
    return pos


def write_release_images(
    path: Path,
    images: Mapping[str, ReleaseFile],
    infos: Mapping[str, NpyInfo],
    keep: Mapping[str, np.ndarray],
    chunk: int,
    progress: bool,
) -> int:
    """Stream the kept triplets of every split, in split order, into ``images.npy``; returns the count.

    A triplet holding a NaN or infinite pixel is not written and its row is cleared in ``keep``.
    """
    total = int(sum(int(k.sum()) for k in keep.values()))
    with (
        ImageArrayWriter(path) as writer,
        tqdm(total=total, desc="release alerts", unit="alert", disable=not progress, mininterval=2) as bar,
    ):
        for split in SPLITS:
            log.info("reading %d triplets of %s", infos[split].shape[0], images[split])
            start = 0
            for block in iter_triplet_blocks(images[split], infos[split], chunk):
                rows = slice(start, start + len(block))
                start += len(block)
                keep[split][rows] &= np.isfinite(block).all(axis=(1, 2, 3))
                mask = keep[split][rows]
                if mask.any():  # a chunk of repeats or NaN triplets only leaves nothing to write
                    writer.append(block if mask.all() else block[mask])
                bar.update(int(mask.sum()))
        return writer.count


# ---------------------------------------------------------------------------------------------- ingest


def ingest_release(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Write the BTSbot release of ``config["data"]["release"]`` as a dataset to ``out_dir``.

    ``config`` is the whole validated config. Returns the manifest.
    """
    cfg = config["data"]["release"]
    with building_dataset(out_dir) as build:
        files = locate_release(cfg)
        for kind, per_split in files.items():
            log.info("release %s: %s", kind, ", ".join(str(f) for f in per_split.values()))
        tables = {}
        infos = {}
        for split in SPLITS:
            tables[split] = read_candidates(files["metadata"][split])
            check_candidates(tables[split], split, str(files["metadata"][split]))
            infos[split] = inspect_triplets(files["images"][split])
            check_rows_match(infos[split], len(tables[split]), files["images"][split], files["metadata"][split])
            log.info("%s: %d alerts of %d sources", split, len(tables[split]), tables[split]["objectId"].nunique())
        check_disjoint_sources(tables)
        check_source_labels(pd.concat([t[["objectId", "label"]] for t in tables.values()]), "the release's tables")
        rows_in_file, keep = release_table(tables)
        rows = {split: len(t) for split, t in tables.items()}
        del tables  # the per-split tables are copied into ``rows_in_file``: free them before the images stream
        n_duplicates = sum(rows.values()) - int(sum(k.sum() for k in keep.values()))
        n_images = write_release_images(
            build / IMAGES_FILE, files["images"], infos, keep, cfg["chunk_alerts"], progress
        )
        kept = np.concatenate([keep[split] for split in SPLITS])
        n_nonfinite = sum(rows.values()) - n_duplicates - int(kept.sum())
        _log_nonfinite(rows_in_file, kept, n_duplicates, n_nonfinite)
        alerts = rows_in_file[kept].reset_index(drop=True)
        del rows_in_file
        if n_images != len(alerts):  # cannot happen unless a file changed while it was read
            raise ReleaseError(f"wrote {n_images} triplets for {len(alerts)} alerts")
        alerts = write_alerts(build, alerts)
        manifest = write_manifest(
            build,
            alerts,
            dataset="ztf",
            source="release",
            synthetic=False,
            digest=config_digest(cfg, config["splits"]),
            extra=_manifest_extra(cfg, files, rows, n_duplicates, n_nonfinite),
        )
    log.info(
        "wrote %d release alerts of %d sources to %s (%d repeated alerts and %d NaN/inf triplets dropped)",
        len(alerts),
        alerts["objectId"].nunique(),
        out_dir,
        n_duplicates,
        n_nonfinite,
    )
    return manifest


def _log_nonfinite(rows_in_file: pd.DataFrame, kept: np.ndarray, n_duplicates: int, n_nonfinite: int) -> None:
    """Name the first alerts whose triplet held a NaN or infinite pixel."""
    if not n_nonfinite:
        return
    duplicated = rows_in_file["alert_id"].duplicated(keep="first").to_numpy()
    dropped = rows_in_file[~kept & ~duplicated]
    examples = ", ".join(f"{r.objectId} at jd {r.jd:.6f} ({r.split})" for r in dropped.head(LOG_FIRST).itertuples())
    log.warning(
        "%d triplet(s) hold NaN or infinite pixels and are dropped with their rows, e.g. %s", n_nonfinite, examples
    )


def _manifest_extra(
    cfg: Mapping[str, Any],
    files: Mapping[str, Mapping[str, ReleaseFile]],
    rows: Mapping[str, int],
    n_duplicates: int,
    n_nonfinite: int,
) -> dict[str, Any]:
    """The manifest's release-specific part: the files read, the rows per split, skips and notes."""
    return {
        "release": {
            "zenodo_record": ZENODO_RECORD,
            "tag": cfg["tag"],
            "files": {kind: [f.name for f in per_split.values()] for kind, per_split in files.items()},
            "read_from": {kind: sorted({str(f.path) for f in per_split.values()}) for kind, per_split in files.items()},
            "rows": dict(rows),
        },
        "skipped": {"duplicate_alert": int(n_duplicates), "nonfinite_triplet": int(n_nonfinite)},
        "notes": [
            (
                f"new_drb and the derived features ({', '.join(DERIVED_FEATURES)}) are the release's own, "
                "not recomputed here."
            ),
            "split is the release's own train / val / test split; the splits config block does not apply.",
            (
                "candid is the release's value (a float with six significant digits): not an alert key; "
                "alert_id is made from (objectId, jd, fid)."
            ),
            "Triplets are the release's normalised cutouts, converted from float64 NHWC to float32 NCHW.",
        ],
    }
