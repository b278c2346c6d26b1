"""The search space: Table 1 of the paper as the default, overridable per parameter in ``sweep.search_space``."""

from __future__ import annotations

import copy
from typing import Any, Mapping

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
PARAM_TYPES = ("float", "int", "categorical")


class SearchSpaceError(ValueError):
    """A search-space entry that cannot be sampled; the message names the config key."""


def training_keys() -> set[str]:
    """The keys of the ``training`` block (what a search-space parameter may set)."""
    from alertvision.config import schema

    return set(schema()["properties"]["training"]["properties"])


def search_space(sweep_cfg: Mapping[str, Any] | None, modality: str = "image") -> dict[str, dict[str, Any]]:
    """Table 1 (plus :data:`METADATA_SPACE` for multi-modal models) with ``sweep_cfg["search_space"]``
    applied: an entry replaces that parameter's distribution, a new key adds one, ``null`` drops one
    (it keeps the training block's value). Image models leave the metadata branch's keys out."""
    space = copy.deepcopy({**TABLE1, **(METADATA_SPACE if modality == "multimodal" else {})})
    for key, spec in dict((sweep_cfg or {}).get("search_space") or {}).items():
        if spec is None:
            space.pop(key, None)
        elif modality == "multimodal" or key not in METADATA_SPACE:
            space[key] = dict(spec)
    known = training_keys()
    for key, spec in space.items():
        if key not in known:
            raise SearchSpaceError(f"config key sweep.search_space.{key}: not a key of the training block "
                                   f"({', '.join(sorted(known))})")
        _check(key, spec)
    return space


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
        raise SearchSpaceError(f"{where}: a {kind} parameter needs low <= high, got {spec.get('low')}, "
                               f"{spec.get('high')}")
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
            params[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]),
                                              log=bool(spec.get("log", False)), step=spec.get("step"))
        else:
            params[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]),
                                            log=bool(spec.get("log", False)), step=int(spec.get("step") or 1))
    return params


def default_params(space: Mapping[str, Any], training: Mapping[str, Any]) -> dict[str, Any]:
    """The training block's own values of the searched keys (what a sweep of 0 trials keeps)."""
    return {key: training[key] for key in space if key in training}
