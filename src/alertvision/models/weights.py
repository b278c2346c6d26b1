"""Pretrained-weight resolution, in one place.

A weight id is one of:
- a timm tag, e.g. ``convnext_pico.d1_in1k`` (its Hugging Face repo is ``timm/<tag>``);
- ``hf_hub:org/repo`` (or ``hf-hub:``), e.g. the Zoobot encoders;
- ``local-dir:/path``: a folder holding ``config.json`` and ``model.safetensors`` or
  ``pytorch_model.bin`` (timm's local layout).

It resolves, in this order, to a local folder in timm's ``local-dir`` layout: a ``local-dir:`` id;
a folder the config maps the id to (``weights.local_dirs``); the repo's snapshot in a filled
Hugging Face cache; a download into that cache when online. Offline with none of these, it raises
:class:`WeightsUnavailable` naming the id and how to provide it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class WeightsUnavailable(RuntimeError):
    """Weights that cannot be had; the message says how to provide them offline."""


class WeightsInvalid(RuntimeError):
    """A weights folder that is not in timm's local-dir layout; the message names the file."""


@dataclass(frozen=True)
class ResolvedWeights:
    """Where a weight id's files are, and the timm architecture its config.json names."""

    weight_id: str
    folder: str
    architecture: str
    via: str  # local-dir | local_dirs | hf-cache | download

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> "ResolvedWeights":
        return cls(**{k: data[k] for k in ("weight_id", "folder", "architecture", "via")})

    @property
    def timm_name(self) -> str:
        """The name to give ``timm.create_model``."""
        return f"local-dir:{self.folder}"


def hub_repo(weight_id: str) -> str | None:
    """The Hugging Face repo of a weight id (None for ``local-dir:``)."""
    for prefix in ("hf_hub:", "hf-hub:"):
        if weight_id.startswith(prefix):
            return weight_id[len(prefix):]
    if weight_id.startswith("local-dir:"):
        return None
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(weight_id)
        if cfg is not None and cfg.hf_hub_id and cfg.hf_hub_id.strip("/").count("/") == 1:
            return cfg.hf_hub_id.strip("/")
    except Exception:  # noqa: BLE001 - an unknown tag falls back to timm's naming
        pass
    return f"timm/{weight_id}"


def check_folder(folder: str | os.PathLike, weight_id: str) -> str:
    """Check a local-dir folder; return the architecture its config.json names."""
    folder = Path(folder)
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise WeightsInvalid(f"weights {weight_id!r}: {cfg_file} is missing (a local-dir folder needs "
                             f"config.json and one of {', '.join(WEIGHT_FILES)})")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsInvalid(f"weights {weight_id!r}: {cfg_file} is not valid JSON ({exc})") from exc
    arch = cfg.get("architecture")
    if not isinstance(arch, str):
        raise WeightsInvalid(f"weights {weight_id!r}: {cfg_file} names no 'architecture'")
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise WeightsInvalid(f"weights {weight_id!r}: {folder} holds none of {', '.join(WEIGHT_FILES)}")
    return arch


def _from_cache(repo: str, cache_dir: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    cfg = try_to_load_from_cache(repo, "config.json", cache_dir=cache_dir)
    if not isinstance(cfg, str):
        return None
    folder = Path(cfg).parent
    if any((folder / f).is_file() for f in WEIGHT_FILES):
        return folder
    for name in WEIGHT_FILES:
        path = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
        if isinstance(path, str) and Path(path).parent == folder:
            return folder
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _help(weight_id: str, repo: str | None, cache_dir: str | None) -> str:
    cache = cache_dir or os.environ.get("HF_HUB_CACHE") or "~/.cache/huggingface/hub"
    lines = [f"weights {weight_id!r} are not available here. Provide them offline with one of:",
             f"  - config `weights: {{local_dirs: {{'{weight_id}': /path/to/folder}}}}`, the folder holding "
             f"config.json and model.safetensors (or pytorch_model.bin);"]
    if repo:
        lines += [f"  - a Hugging Face cache holding {repo} (copy it into {cache}, or set weights.cache_dir "
                  f"/ HF_HUB_CACHE), then run with HF_HUB_OFFLINE=1;",
                  f"  - on a machine with internet: `huggingface-cli download {repo} config.json "
                  f"model.safetensors --local-dir FOLDER`, then copy FOLDER here and use local_dirs."]
    return "\n".join(lines)


def resolve_weights(weight_id: str, local_dirs: Mapping[str, str] | None = None, cache_dir: str | None = None,
                    allow_download: bool = True, endpoint: str | None = None) -> ResolvedWeights:
    """Find (or download) the files of ``weight_id``; see the module docstring for the order."""
    if weight_id.startswith("local-dir:"):
        folder = Path(weight_id[len("local-dir:"):]).expanduser().resolve()
        if not folder.is_dir():
            raise WeightsUnavailable(f"weights {weight_id!r}: folder {folder} does not exist")
        return ResolvedWeights(weight_id, str(folder), check_folder(folder, weight_id), "local-dir")
    mapped = (local_dirs or {}).get(weight_id)
    if mapped:
        folder = Path(mapped).expanduser().resolve()
        if not folder.is_dir():
            raise WeightsUnavailable(f"weights {weight_id!r}: weights.local_dirs names {folder}, which does not exist")
        return ResolvedWeights(weight_id, str(folder), check_folder(folder, weight_id), "local_dirs")
    repo = hub_repo(weight_id)
    folder = _from_cache(repo, cache_dir)
    if folder is not None:
        return ResolvedWeights(weight_id, str(folder), check_folder(folder, weight_id), "hf-cache")
    if not allow_download or _offline():
        raise WeightsUnavailable(_help(weight_id, repo, cache_dir))
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo, allow_patterns=["config.json", *WEIGHT_FILES], cache_dir=cache_dir,
                                 endpoint=endpoint)
    except Exception as exc:  # noqa: BLE001 - network, auth and missing-repo errors all end here
        raise WeightsUnavailable(f"download of {repo} failed ({type(exc).__name__}: {exc}).\n"
                                 + _help(weight_id, repo, cache_dir)) from exc
    return ResolvedWeights(weight_id, str(Path(path)), check_folder(path, weight_id), "download")
