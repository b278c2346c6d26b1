"""The search space: Table 1 of the paper as the default, overridable per parameter in ``sweep.search_space``."""

from __future__ import annotations

import copy
from typing import Any, Mapping

from alertvision.schema import schema
from alertvision.settings import CNN_KEYS, ModelSpec

#: Table 1 (Rehemtulla et al.), keyed by the ``training`` key each parameter sets. The learning rates,
#: warm-up epochs, batch sizes and dense sizes are the paper's sets; dropout is uniform on [0.3, 0.9].
TABLE1: dict[str, dict[str, Any]] = {
    "lr": {"type": "categorical", "choices": [1e-6, 5e-6, 1e-7, 5e-7]},
    "warmup_epochs": {"type": "categorical", "choices": [2, 4, 6]},
    "batch_size": {"type": "categorical", "choices": [16, 64, 256]},
    "dense1": {"type": "categorical", "choices": [128, 256, 512]},
    "dropout": {"type": "float", "low": 0.3, "high": 0.9},
    "dense2": {"type": "categorical", "choices": [8, 16, 32]},
}
#: The metadata branch of multi-modal models (not in Table 1, which covers the image head). Our choice:
#: widths of the order of the 25 inputs up to 5x (a wider branch would outweigh the image embedding
#: in the fusion head), and less dropout than the image head's 0.3-0.9 since 25 features carry
#: little redundancy.
METADATA_SPACE: dict[str, dict[str, Any]] = {
    "meta_dense1": {"type": "categorical", "choices": [16, 32, 64, 128]},
    "meta_dense2": {"type": "categorical", "choices": [8, 16, 32]},
    "meta_dropout": {"type": "float", "low": 0.0, "high": 0.5},
}
#: BTSbot's CNN (kind cnn): its own keys, added to Table 1. Rehemtulla et al. 2024 swept the CNN with
#: Weights & Biases, but their ranges are in neither the paper's text nor BTSbot's public code, so these
#: are ours (docs/fidelity.md, row "sweeps"): each set brackets the production value (channels 32 / 64,
#: kernel 5, dropouts 0.50 / 0.55, lr 1e-4), and the learning rates extend Table 1's (1e-7 to 5e-6,
#: chosen for pre-trained backbones) up to BTSbot's 1e-4 for a CNN trained from scratch.
CNN_SPACE: dict[str, dict[str, Any]] = {
    "lr": {"type": "categorical", "choices": [1e-7, 5e-7, 1e-6, 5e-6, 1e-5, 5e-5, 1e-4]},
    "conv1_channels": {"type": "categorical", "choices": [16, 32, 64]},
    "conv2_channels": {"type": "categorical", "choices": [32, 64, 128]},
    "conv_kernel": {"type": "categorical", "choices": [3, 5, 7]},
    "conv_dropout1": {"type": "float", "low": 0.3, "high": 0.7},
    "conv_dropout2": {"type": "float", "low": 0.3, "high": 0.7},
}
#: The head keys BTSbot's metadata-only network (``um_nn``: the metadata branch, then Dense(1)) has no layer for.
UM_NN_ABSENT = ("dense1", "dense2", "dropout")
PARAM_TYPES = ("float", "int", "categorical")


class SearchSpaceError(ValueError):
    """A search-space entry that cannot be sampled; the message names the config key."""


def training_keys() -> set[str]:
    """The keys of the ``training`` block (what a search-space parameter may set)."""
    return set(schema()["properties"]["training"]["properties"])


def search_space(
    sweep_cfg: Mapping[str, Any] | None, modality: str = "image", kind: str = "timm", head: str | None = None
) -> dict[str, dict[str, Any]]:
    """Table 1 (plus :data:`METADATA_SPACE` for multi-modal models, :data:`CNN_SPACE` for the CNN) with
    ``sweep_cfg["search_space"]`` applied: an entry replaces that parameter's distribution, a new key adds
    one, ``null`` drops one (it keeps the configured value). Image models leave the metadata branch's keys
    out, other architectures the CNN's; the metadata-only model with BTSbot's ``um_nn`` head (kind none,
    ``head`` um_nn) the head's (dense1, dense2, dropout), which it does not have."""
    space = copy.deepcopy(
        {**TABLE1, **(METADATA_SPACE if modality == "multimodal" else {}), **(CNN_SPACE if kind == "cnn" else {})}
    )
    cnn_only = set(CNN_KEYS) if kind != "cnn" else set()
    headless = set(UM_NN_ABSENT) if kind == "none" and head == "um_nn" else set()
    for key in headless:
        space.pop(key, None)
    for key, spec in dict((sweep_cfg or {}).get("search_space") or {}).items():
        if spec is None:
            space.pop(key, None)
        elif (modality == "multimodal" or key not in METADATA_SPACE) and key not in cnn_only | headless:
            space[key] = dict(spec)
    known = training_keys() | set(CNN_KEYS if kind == "cnn" else ())
    for key, spec in space.items():
        if key not in known:
            raise SearchSpaceError(
                f"config key sweep.search_space.{key}: not a key of the training block "
                f"or of the CNN ({', '.join(sorted(known))})"
            )
        _check(key, spec)
    return space


def split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sampled (or best) values as (architecture keys, training keys): the CNN's own keys go to the
    ``archs.<name>`` block, the rest to the training block."""
    arch = {k: v for k, v in params.items() if k in CNN_KEYS}
    return arch, {k: v for k, v in params.items() if k not in CNN_KEYS}


def _check(key: str, spec: Mapping[str, Any]) -> None:
    where = f"config key sweep.search_space.{key}"
    kind = spec.get("type")
    if kind not in PARAM_TYPES:
        raise SearchSpaceError(f"{where}: type must be one of {', '.join(PARAM_TYPES)}, got {kind!r}")
    if kind == "categorical":
        if not spec.get("choices"):
            raise SearchSpaceError(f"{where}: a categorical parameter needs a non-empty `choices` list")
        return
    if "low" not in spec or "high" not in spec or not spec["low"] <= spec["high"]:
        raise SearchSpaceError(
            f"{where}: a {kind} parameter needs low <= high, got {spec.get('low')}, {spec.get('high')}"
        )
    if spec.get("log") and spec["low"] <= 0:
        raise SearchSpaceError(f"{where}: a log-scaled parameter needs low > 0")
    if spec.get("log") and spec.get("step") is not None:
        raise SearchSpaceError(f"{where}: `step` and `log` cannot be combined")


def suggest(trial: Any, space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Sample one value per parameter of ``space`` on an Optuna trial: training-block overrides."""
    params: dict[str, Any] = {}
    for key, spec in space.items():
        kind = spec["type"]
        if kind == "categorical":
            params[key] = trial.suggest_categorical(key, list(spec["choices"]))
        elif kind == "float":
            params[key] = trial.suggest_float(
                key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)), step=spec.get("step")
            )
        else:
            params[key] = trial.suggest_int(
                key,
                int(spec["low"]),
                int(spec["high"]),
                log=bool(spec.get("log", False)),
                step=int(spec.get("step") or 1),
            )
    return params


def default_params(
    space: Mapping[str, Any], training: Mapping[str, Any], model: ModelSpec | None = None
) -> dict[str, Any]:
    """The configured values of the searched keys (what a sweep of 0 trials keeps): the training block's,
    and the architecture's for the CNN's own keys."""
    values = {**(model.as_dict() if model is not None else {}), **dict(training)}
    return {key: values[key] for key in space if key in values}
