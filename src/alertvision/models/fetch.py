"""Materialise a weight id once into a folder in timm's local-dir layout.

``fetch_weights(id, out_folder)`` leaves in ``out_folder``: ``config.json`` (copied), ``model.safetensors``
(copied, or converted from ``pytorch_model.bin``) and ``source.json`` (the id, where the files came
from, the source files' sha256 and sizes). It finds the files as :func:`resolve_weights` does, with
one place before the others: ``out_folder`` itself, for a person who filled it by hand. The folder is
built beside ``out_folder`` and renamed into place only once the weights load into their
architecture, so a failure never leaves a partial ``out_folder``; a complete one fetched for the
same id is left as it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from alertvision.atomic import atomic_dir
from alertvision.models.weights import (
    WEIGHT_FILES,
    WEIGHTS_FIX,
    ResolvedWeights,
    WeightsInvalid,
    WeightsUnavailable,
    check_folder,
    hub_repo,
    load_pretrained_backbone,
    resolve_weights,
    weights_file,
)
from alertvision.safeload import RefusedFileError, load_tensors

log = logging.getLogger(__name__)

SOURCE_FILE = "source.json"
#: What a fetched folder holds besides source.json.
FETCHED_FILES = ("config.json", "model.safetensors")


def fetch_weights(
    weight_id: str,
    out_folder: str | os.PathLike,
    *,
    local_dirs: Mapping[str, str] | None = None,
    cache_dir: str | None = None,
    endpoint: str | None = None,
    allow_download: bool = True,
) -> dict[str, Any]:
    """Fill ``out_folder`` with the weights of ``weight_id`` (once); returns its source record plus ``folder``."""
    out = Path(out_folder).expanduser().absolute()
    record = fetched_record(out)
    if record is not None and record.get("weight_id") == weight_id:
        log.info("weights %s: %s is complete, nothing to do", weight_id, out)
        return {**record, "folder": str(out)}
    if record is not None:
        log.info("weights %s: %s holds %s, fetching again", weight_id, out, record.get("weight_id"))
    resolved = _resolve(weight_id, out, local_dirs, cache_dir, endpoint, allow_download)
    with atomic_dir(out) as tmp:
        record = _materialise(resolved, tmp, endpoint)
    log.info("weights %s: %s <- %s (via %s)", weight_id, out, resolved.folder, resolved.via)
    return {**record, "folder": str(out)}


def fetched_record(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The source record of a complete fetched folder (its files there, at their recorded sizes), else None."""
    folder = Path(folder)
    try:
        record = json.loads((folder / SOURCE_FILE).read_text())
        outputs = record["outputs"]
        complete = all((folder / name).stat().st_size == outputs[name]["size"] for name in FETCHED_FILES)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if complete else None


def fetched_weights(folder: str | os.PathLike) -> ResolvedWeights:
    """The :class:`ResolvedWeights` of a fetched folder, under the weight id it was fetched for."""
    folder = Path(folder).expanduser().resolve()
    record = fetched_record(folder)
    if record is None:
        raise WeightsUnavailable(
            f"{folder} is not a complete fetched weights folder (config.json, "
            f"model.safetensors and {SOURCE_FILE}); run the fetch step first"
        )
    return ResolvedWeights(record["weight_id"], str(folder), record["architecture"], record.get("via", "fetched"))


def _resolve(
    weight_id: str,
    out: Path,
    local_dirs: Mapping[str, str] | None,
    cache_dir: str | None,
    endpoint: str | None,
    allow_download: bool,
) -> ResolvedWeights:
    """Where the files are: ``out`` filled by hand, else :func:`resolve_weights`' order."""
    by_hand = not (out / SOURCE_FILE).exists()  # a source.json there is an earlier fetch's, of another id
    if by_hand and (out / "config.json").is_file() and weights_file(out) is not None:
        return ResolvedWeights(weight_id, str(out), check_folder(out, weight_id), "out_folder")
    try:
        return resolve_weights(weight_id, local_dirs, cache_dir, allow_download=allow_download, endpoint=endpoint)
    except WeightsUnavailable as exc:
        raise WeightsUnavailable(
            f"{exc}\n  - or put config.json and model.safetensors (or pytorch_model.bin) "
            f"into {out}, the folder this step fills, and rerun."
        ) from exc


def _file_info(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"sha256": digest.hexdigest(), "size": path.stat().st_size}


def _convert_bin(src: Path, dst: Path, weight_id: str) -> None:
    """Write a pickled state dict as safetensors."""
    from safetensors.torch import save_file  # deferred: safetensors is heavy

    try:
        state = load_tensors(src, fix=WEIGHTS_FIX)
    except RefusedFileError as exc:  # holds code, truncated, or not a PyTorch file: the message says which
        raise WeightsInvalid(f"weights {weight_id!r}: {exc}") from exc
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise WeightsInvalid(f"weights {weight_id!r}: {src} does not hold a state dict (name -> tensor)")
    # safetensors refuses tensors that share storage (tied weights) or are views: one owned copy each
    save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(dst), metadata={"format": "pt"})


def _materialise(resolved: ResolvedWeights, tmp: Path, endpoint: str | None) -> dict[str, Any]:
    """Copy or convert the resolved files into ``tmp``, check they load, write source.json; returns the record."""
    src = Path(resolved.folder)
    weights_src = weights_file(src)
    if weights_src is None:
        raise WeightsInvalid(f"weights {resolved.weight_id!r}: {src} holds none of {', '.join(WEIGHT_FILES)}")
    shutil.copyfile(src / "config.json", tmp / "config.json")
    if weights_src.suffix == ".safetensors":
        shutil.copyfile(weights_src, tmp / "model.safetensors")
    else:
        _convert_bin(weights_src, tmp / "model.safetensors", resolved.weight_id)
    # built at the file's own input size, so this checks the file against its architecture as saved
    backbone = load_pretrained_backbone(
        ResolvedWeights(resolved.weight_id, str(tmp), resolved.architecture, resolved.via), label=str(weights_src)
    )
    record = {
        "weight_id": resolved.weight_id,
        "architecture": resolved.architecture,
        "via": resolved.via,
        "source_folder": str(src),
        "repo": hub_repo(resolved.weight_id),
        "revision": src.name if resolved.via in ("hf-cache", "download") else None,
        "endpoint": endpoint if resolved.via == "download" else None,
        "files": {p.name: _file_info(p) for p in (src / "config.json", weights_src)},
        "converted_from": None if weights_src.suffix == ".safetensors" else weights_src.name,
        "outputs": {name: _file_info(tmp / name) for name in FETCHED_FILES},
        "backbone_tensors": backbone.pretrained_load["loaded"],
        "dropped_classifier": backbone.pretrained_load["dropped"],
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record
