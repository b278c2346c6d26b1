"""Typed settings: frozen dataclasses built once from the validated config.

The schema (``config.schema.yaml``) is the only place a default lives. The classes here have no
defaults of their own: ``from_config`` reads a validated block whole, and ``from_block`` takes a
block that may leave keys out (a test's or a benchmark's) and fills what is missing from the
schema's defaults of that block, so the two can never disagree.

What a run is trained with (:class:`TrainingSettings`) is kept apart from the shape of the model it
trains (:class:`HeadSettings` and, for multi-modal runs, :class:`MetadataBranchSettings`), although
the config keeps both in one ``training`` block (BTSbot's train configs do the same).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def _frozen(value: Any) -> Any:
    """Lists as tuples, so that a settings object is hashable and cannot be changed through a field."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def _pick(names: list[str] | tuple[str, ...], block: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``names`` of ``block`` (lists as tuples); a missing one raises KeyError naming it."""
    missing = [n for n in names if n not in block]
    if missing:
        raise KeyError(
            f"{where}: {', '.join(missing)} missing; build settings from a validated config "
            f"(alertvision.config.load_config or validate_config)"
        )
    return {n: _frozen(block[n]) for n in names}


def _take(cls: type[T], block: Mapping[str, Any], where: str) -> T:
    return cls(**_pick([f.name for f in fields(cls)], block, where))


@lru_cache(maxsize=None)
def _schema_defaults(*path: str) -> dict[str, Any]:
    """The defaults the schema gives the properties of the block at ``path`` (e.g. ``("splits",)``)."""
    from alertvision.schema import schema  # deferred: yaml, which benchmarks/table2.py runs without

    node = schema()
    for key in path:
        node = node["properties"][key]
    return {k: v["default"] for k, v in node.get("properties", {}).items() if isinstance(v, Mapping) and "default" in v}


def with_schema_defaults(block: Mapping[str, Any] | None, *path: str) -> dict[str, Any]:
    """``block`` (the config block at ``path``, possibly partial) with the schema's defaults for what it leaves out."""
    return {**_schema_defaults(*path), **dict(block or {})}


# --------------------------------------------------------------------------- training and model shape


@dataclass(frozen=True)
class TrainingSettings:
    """How a model is trained: the ``training`` block (with an architecture's overrides) less the
    model-shape keys."""

    epochs: int
    batch_size: int
    eval_batch_size: int
    lr: float
    weight_decay: float
    betas: tuple[float, float]
    warmup_epochs: float
    schedule: str
    warmup_start_factor: float
    lr_floor_factor: float
    schedule_epochs: int | None
    patience: int
    min_improvement: float
    start_from_epoch: int
    drop_last: bool
    augment: bool
    threads: int
    device: str
    channels_last: bool
    bf16: bool

    @classmethod
    def from_config(cls, params: Mapping[str, Any]) -> TrainingSettings:
        """From :func:`alertvision.config.training_params` (model-shape keys are ignored)."""
        return _take(cls, params, "training")


@dataclass(frozen=True)
class MetadataBranchSettings:
    """The metadata branch of a multi-modal model: two dense layers (the second may be None) and dropout."""

    meta_dense1: int
    meta_dense2: int | None
    meta_dropout: float


@dataclass(frozen=True)
class HeadSettings:
    """The classifier head (dense1, dense2 (None: one layer), dropout) and, for a multi-modal model,
    its metadata branch."""

    dense1: int
    dense2: int | None
    dropout: float
    metadata: MetadataBranchSettings | None = None

    @classmethod
    def from_config(cls, params: Mapping[str, Any] | HeadSettings) -> HeadSettings:
        """From a mapping holding the head keys (a training block, a saved model's ``head_cfg``); the
        metadata branch when the mapping holds its keys."""
        if isinstance(params, HeadSettings):
            return params
        has_branch = all(k in params for k in METADATA_KEYS)
        metadata = _take(MetadataBranchSettings, params, "training") if has_branch else None
        return cls(**_pick(HEAD_KEYS, params, "training"), metadata=metadata)

    def as_dict(self, with_metadata: bool) -> dict[str, Any]:
        """The keys as a saved model stores them (head first, then the metadata branch's)."""
        out = {k: getattr(self, k) for k in HEAD_KEYS}
        if with_metadata:
            if self.metadata is None:
                raise ValueError("a multi-modal model needs meta_dense1, meta_dense2 and meta_dropout")
            out.update(asdict(self.metadata))
        return out


#: The training keys that shape the model rather than its training (head, then metadata branch).
HEAD_KEYS = tuple(f.name for f in fields(HeadSettings) if f.name != "metadata")
METADATA_KEYS = tuple(f.name for f in fields(MetadataBranchSettings))


# --------------------------------------------------------------------------- splits, sweeps


@dataclass(frozen=True)
class SplitSettings:
    """The ``splits`` block: how sources are split and training fractions drawn."""

    seed: int
    probabilities: tuple[float, float, float]
    max_alerts_per_source: int | None
    latest_subsets: tuple[str, ...]
    fraction_sampling: str
    fraction_eval: str

    @classmethod
    def from_block(cls, block: Mapping[str, Any] | SplitSettings) -> SplitSettings:
        """From a ``splits`` block; keys it leaves out take the schema's defaults."""
        if isinstance(block, SplitSettings):
            return block
        return _take(cls, with_schema_defaults(block, "splits"), "splits")


@dataclass(frozen=True)
class PrunerSettings:
    """``sweep.pruner``: which pruner stops unpromising trials, and its parameters."""

    kind: str
    startup_trials: int
    warmup_epochs: int
    reduction_factor: int

    @classmethod
    def from_block(cls, block: Mapping[str, Any] | str | None) -> PrunerSettings:
        """From a ``sweep.pruner`` block or a bare kind (None: ``none``); left-out keys take the schema's defaults."""
        if isinstance(block, PrunerSettings):
            return block
        block = {"kind": block or "none"} if isinstance(block, str) or block is None else block
        return _take(cls, with_schema_defaults(block, "sweep", "pruner"), "sweep.pruner")
