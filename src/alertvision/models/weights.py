"""Pretrained-weight resolution and loading, in one place.

A weight id is one of:
- a timm tag, e.g. ``convnext_pico.d1_in1k`` (its Hugging Face repo is ``timm/<tag>``);
- ``hf_hub:org/repo`` (or ``hf-hub:``), e.g. the Zoobot encoders;
- ``local-dir:/path``: a folder holding ``config.json`` and ``model.safetensors`` or
  ``pytorch_model.bin`` (timm's local layout).

It resolves, in this order, to a local folder in timm's ``local-dir`` layout: a ``local-dir:`` id;
a folder the config maps the id to (``weights.local_dirs``); the repo's snapshot in a filled
Hugging Face cache; a download into that cache when online. Offline with none of these, it raises
:class:`WeightsUnavailable` naming the id and how to provide it.

:func:`load_pretrained_backbone` builds the architecture without its classifier and loads every
backbone tensor of the folder's weights file through timm's pretrained path (which adapts what a
strict load cannot, e.g. MaxViT's relative-position tables at another input size), and fails
unless every backbone tensor was loaded.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from alertvision.safeload import RefusedFileError, load_tensors

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

#: Weight files of a local-dir folder, in timm's order of preference.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: what to do with a weights file that cannot be loaded
WEIGHTS_FIX = "delete the weights folder and fetch the weights again (alertvision weights)"


class WeightsUnavailable(RuntimeError):
    """Weights that cannot be had; the message says how to provide them offline."""


class WeightsInvalid(RuntimeError):
    """Weights that are there but unusable (missing file, unknown architecture, tensors that do not fit);
    the message names the file."""


@dataclass(frozen=True)
class ResolvedWeights:
    """Where a weight id's files are, and the timm architecture its config.json names."""

    weight_id: str
    folder: str
    architecture: str
    via: str  # local-dir | local_dirs | hf-cache | download | out_folder | fetched

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
            return weight_id[len(prefix) :]
    if weight_id.startswith("local-dir:"):
        return None
    try:
        import timm  # deferred: timm is heavy

        cfg = timm.models.get_pretrained_cfg(weight_id)
        if cfg is not None and cfg.hf_hub_id and cfg.hf_hub_id.strip("/").count("/") == 1:
            return cfg.hf_hub_id.strip("/")
    except Exception:  # noqa: BLE001 - an unknown tag falls back to timm's naming
        pass
    return f"timm/{weight_id}"


def weights_file(folder: str | os.PathLike) -> Path | None:
    """The weights file timm loads from a local-dir folder (None when it holds none)."""
    for name in WEIGHT_FILES:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def read_config(folder: str | os.PathLike, weight_id: str) -> dict:
    """The folder's config.json as a dict."""
    cfg_file = Path(folder) / "config.json"
    if not cfg_file.is_file():
        raise WeightsInvalid(
            f"weights {weight_id!r}: {cfg_file} is missing (a local-dir folder needs "
            f"config.json and one of {', '.join(WEIGHT_FILES)})"
        )
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsInvalid(f"weights {weight_id!r}: {cfg_file} is not valid JSON ({exc})") from exc
    if not isinstance(cfg, dict):
        raise WeightsInvalid(f"weights {weight_id!r}: {cfg_file} is not a JSON object")
    return cfg


def check_architecture(architecture: Any, cfg_file: str | os.PathLike, weight_id: str) -> str:
    """Fail unless ``architecture`` (what ``cfg_file`` names) is a timm model."""
    import timm  # deferred: timm is heavy

    if not isinstance(architecture, str) or not architecture:
        raise WeightsInvalid(f"weights {weight_id!r}: {cfg_file} names no 'architecture'")
    if not timm.models.is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models(), n=3)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise WeightsInvalid(
            f"weights {weight_id!r}: {cfg_file} names architecture {architecture!r}, which is "
            f"not a timm model (timm {timm.__version__}){hint}"
        )
    return architecture


def check_folder(folder: str | os.PathLike, weight_id: str) -> str:
    """Check a local-dir folder; return the architecture its config.json names."""
    folder = Path(folder)
    cfg = read_config(folder, weight_id)
    arch = check_architecture(cfg.get("architecture"), folder / "config.json", weight_id)
    if weights_file(folder) is None:
        raise WeightsInvalid(f"weights {weight_id!r}: {folder} holds none of {', '.join(WEIGHT_FILES)}")
    return arch


def _from_cache(repo: str, cache_dir: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache  # deferred: huggingface_hub is heavy

    cfg = try_to_load_from_cache(repo, "config.json", cache_dir=cache_dir)
    if not isinstance(cfg, str):
        return None
    folder = Path(cfg).parent
    if weights_file(folder) is not None:
        return folder
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _help(weight_id: str, repo: str | None, cache_dir: str | None) -> str:
    cache = cache_dir or os.environ.get("HF_HUB_CACHE") or "~/.cache/huggingface/hub"
    lines = [
        f"weights {weight_id!r} are not available here. Provide them offline with one of:",
        f"  - config `weights: {{local_dirs: {{'{weight_id}': /path/to/folder}}}}`, the folder holding "
        f"config.json and model.safetensors (or pytorch_model.bin);",
    ]
    if repo:
        lines += [
            f"  - a Hugging Face cache holding {repo} (copy it into {cache}, or set weights.cache_dir "
            f"/ HF_HUB_CACHE), then run with HF_HUB_OFFLINE=1;",
            f"  - on a machine with internet: `hf download {repo} --include config.json --include "
            f"model.safetensors --include pytorch_model.bin --local-dir FOLDER` (huggingface_hub < 1.0: "
            f"`huggingface-cli download`), then copy FOLDER here and use local_dirs.",
        ]
    return "\n".join(lines)


def _why(exc: BaseException) -> str:
    """An exception and its causes, one short clause each, plus what it most likely means."""
    parts: list[str] = []
    hints: list[str] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen and len(parts) < 3:
        seen.add(id(exc))
        name = type(exc).__name__
        text = " ".join(str(exc).split())
        part = f"{name}: {text[:300]}" if text else name
        if part not in parts:
            parts.append(part)
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if name == "GatedRepoError" or status in (401, 403):
            hints.append("the repo is gated or private: accept its terms on the Hub and set HF_TOKEN")
        elif "Timeout" in name:
            hints.append("the Hub did not answer in time (HF_HUB_ETAG_TIMEOUT, HF_HUB_DOWNLOAD_TIMEOUT)")
        elif name == "RemoteProtocolError" or "Consistency check failed" in text:
            hints.append("the connection broke off before the file was complete")
        elif isinstance(status, int) and status >= 500:
            hints.append(f"the Hub answered HTTP {status}; retry later")
        exc = exc.__cause__ or exc.__context__
    hint = f" [{hints[0]}]" if hints else ""
    return " <- ".join(parts) + hint


def _download(weight_id: str, repo: str, cache_dir: str | None, endpoint: str | None) -> Path:
    """config.json, then the first weights file the repo has, into the cache; returns the snapshot folder.

    ``hf_hub_download`` per file rather than ``snapshot_download``: every request it makes has a
    timeout, while the repo-info and tree listing of ``snapshot_download`` wait forever on a stalled Hub.
    """
    from huggingface_hub import hf_hub_download  # deferred: huggingface_hub is heavy
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError  # deferred: huggingface_hub is heavy

    def remote_missing(exc: Exception) -> bool:
        return isinstance(exc, EntryNotFoundError) and not isinstance(exc, LocalEntryNotFoundError)

    try:
        cfg = Path(hf_hub_download(repo, "config.json", cache_dir=cache_dir, endpoint=endpoint))
    except Exception as exc:
        if remote_missing(exc):
            raise WeightsInvalid(f"weights {weight_id!r}: hub repo {repo} has no config.json") from exc
        raise
    commit = cfg.parent.name  # the weights come from the same commit as the config
    for name in WEIGHT_FILES:
        try:
            path = Path(hf_hub_download(repo, name, revision=commit, cache_dir=cache_dir, endpoint=endpoint))
        except Exception as exc:
            if remote_missing(exc):
                continue
            raise
        if path.parent != cfg.parent:
            raise WeightsInvalid(f"weights {weight_id!r}: {path} and {cfg} are from different snapshots")
        return cfg.parent
    raise WeightsInvalid(
        f"weights {weight_id!r}: hub repo {repo} (commit {commit}) holds config.json but none "
        f"of {', '.join(WEIGHT_FILES)}"
    )


def resolve_weights(
    weight_id: str,
    local_dirs: Mapping[str, str] | None = None,
    cache_dir: str | None = None,
    allow_download: bool = True,
    endpoint: str | None = None,
) -> ResolvedWeights:
    """Find (or download) the files of ``weight_id``; see the module docstring for the order."""
    if weight_id.startswith("local-dir:"):
        folder = Path(weight_id[len("local-dir:") :]).expanduser().resolve()
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
    try:
        folder = _download(weight_id, repo, cache_dir, endpoint)
    except WeightsInvalid:
        raise
    except Exception as exc:  # noqa: BLE001 - network, auth and missing-repo errors all end here
        raise WeightsUnavailable(
            f"download of {repo} failed ({_why(exc)}).\n" + _help(weight_id, repo, cache_dir)
        ) from exc
    return ResolvedWeights(weight_id, str(folder), check_folder(folder, weight_id), "download")


def tensor_names(file: str | os.PathLike, weight_id: str) -> set[str]:
    """The tensor names in a weights file (safetensors or a pickled state dict)."""
    file = Path(file)
    try:
        if file.suffix == ".safetensors":
            from safetensors import safe_open  # deferred: safetensors is heavy

            with safe_open(str(file), framework="pt") as fh:
                return set(fh.keys())

        state = load_tensors(file, fix=WEIGHTS_FIX)
    except RefusedFileError as exc:  # holds code, truncated, or not a PyTorch file: the message says which
        raise WeightsInvalid(f"weights {weight_id!r}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file, whatever the reader says
        raise WeightsInvalid(f"weights {weight_id!r}: {file} cannot be read ({_why(exc)})") from exc
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise WeightsInvalid(f"weights {weight_id!r}: {file} does not hold a state dict (name -> tensor)")
    return set(state)


def _few(names, n: int = 5) -> str:
    names = sorted(names)
    return ", ".join(names[:n]) + (f" ... ({len(names)} in all)" if len(names) > n else "")


def _classifier_prefixes(cfg: Mapping[str, Any], architecture: str) -> tuple[str, ...]:
    """Module names of the classifier the file may carry (config.json's, else timm's for the architecture)."""
    import timm  # deferred: timm is heavy

    pretrained = cfg.get("pretrained_cfg") if isinstance(cfg.get("pretrained_cfg"), Mapping) else cfg
    names = pretrained.get("classifier")
    if not names:
        default = timm.models.get_pretrained_cfg(architecture)
        names = getattr(default, "classifier", None)
    names = (names,) if isinstance(names, str) else tuple(names or ())
    return tuple(f"{n}." for n in names)


def load_pretrained_backbone(weights: ResolvedWeights, *, label: str | None = None, **timm_kwargs: Any) -> "nn.Module":
    """The weights' architecture without classifier (num_classes=0), every backbone tensor loaded from the file.

    ``timm_kwargs`` go to ``timm.create_model`` (e.g. ``img_size``); ``label`` names the file in
    messages (default: its path). Sets ``backbone.pretrained_load`` to what was loaded.
    """
    import timm  # deferred: timm is heavy

    folder = Path(weights.folder)
    cfg = read_config(folder, weights.weight_id)
    check_architecture(weights.architecture, folder / "config.json", weights.weight_id)
    file = weights_file(folder)
    if file is None:
        raise WeightsInvalid(f"weights {weights.weight_id!r}: {folder} holds none of {', '.join(WEIGHT_FILES)}")
    label = label or str(file)
    in_file = tensor_names(file, weights.weight_id)
    try:
        backbone = timm.create_model(weights.timm_name, pretrained=True, num_classes=0, **timm_kwargs)
    except Exception as exc:  # noqa: BLE001 - timm reports shape and key mismatches as RuntimeError
        text = str(exc).strip().replace("\n\t", "\n  ")
        raise WeightsInvalid(
            f"weights {weights.weight_id!r}: {label} does not load into {weights.architecture} "
            f"(the architecture its config.json names): {text}"
        ) from exc
    # timm drops the file's classifier itself when config.json's num_classes is not 0; with
    # strict=False then, a tensor missing from the file would go unnoticed: count them here.
    expected = set(backbone.state_dict())
    loaded = expected & in_file
    head = sorted(k for k in in_file - expected if k.startswith(_classifier_prefixes(cfg, weights.architecture)))
    unused = sorted(in_file - expected - set(head))
    if len(loaded) != len(expected) or unused:
        problems = [f"loaded {len(loaded)} of {len(expected)} backbone tensors from {label}"]
        if expected - in_file:
            problems.append(f"missing from the file: {_few(expected - in_file)}")
        if unused:
            problems.append(f"in the file but not in {weights.architecture}: {_few(unused)}")
        raise WeightsInvalid(f"weights {weights.weight_id!r}: " + "; ".join(problems))
    log.info(
        "loaded %d of %d tensors from %s%s",
        len(loaded),
        len(expected),
        label,
        f" (dropped the classifier: {', '.join(head)})" if head else "",
    )
    backbone.pretrained_load = {"file": label, "loaded": len(loaded), "expected": len(expected), "dropped": head}
    return backbone
