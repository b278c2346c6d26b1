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


# --------------------------------------------------------------------------- the model's own settings

#: The BTSbot CNN's own keys (``archs.<name>`` of kind cnn; the sweep may sample them).
CNN_KEYS = ("conv1_channels", "conv2_channels", "conv_kernel", "conv_dropout1", "conv_dropout2")


@dataclass(frozen=True)
class ModelSpec:
    """What the model factory builds for one run: the ``archs.<name>`` block (less its ``training`` and
    ``sweep`` overrides) resolved for the run's modality, regimen and dataset.

    A key the run does not use is None and is left out of :meth:`as_dict`, the form a model.pt stores
    (``arch_cfg``). The effective values (:attr:`image_size`, :attr:`scale`, ...) say what a model saved
    before a key existed was built with."""

    kind: str  # cnn | timm | none (the metadata-only model)
    timm_name: str | None = None
    input_size: int | None = None
    input_scale: float | None = None
    conv1_channels: int | None = None
    conv2_channels: int | None = None
    conv_kernel: int | None = None
    conv_dropout1: float | None = None
    conv_dropout2: float | None = None
    head: str | None = None  # the metadata-only model's head: um_nn or mlp
    modality: str = "image"
    input_norm: str | None = None  # the regimen's input_norm: l2 or weights
    metadata_fill: str | None = None  # multi-modal runs: the rule for non-finite features
    timm_head: str | None = None  # multi-modal timm runs: what the backbone keeps of its own head

    @classmethod
    def of(cls, value: "ModelSpec | Mapping[str, Any]") -> "ModelSpec":
        """``value`` as a spec: a spec as it is; a mapping (a model.pt's ``arch_cfg``, an ``archs.<name>``
        block) read by :meth:`from_arch_block`."""
        return value if isinstance(value, ModelSpec) else cls.from_arch_block(value)

    @classmethod
    def from_dict(cls, block: Mapping[str, Any]) -> "ModelSpec":
        """A spec from its dict form; a key it does not know raises ValueError naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(block) - known)
        if unknown:
            raise ValueError(f"model spec: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "kind" not in block:
            raise ValueError("model spec: `kind` missing (cnn, timm or none)")
        return cls(**{k: _frozen(v) for k, v in block.items()})

    @classmethod
    def from_arch_block(cls, block: Mapping[str, Any]) -> "ModelSpec":
        """The spec of a validated ``archs.<name>`` block as it is (an image model), its ``training`` and
        ``sweep`` overrides left out."""
        return cls.from_dict({k: v for k, v in block.items() if k not in ("training", "sweep")})

    def as_dict(self) -> dict[str, Any]:
        """The keys the spec sets, in field order: what a model.pt stores and a Snakemake param holds."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def with_values(self, **values: Any) -> "ModelSpec":
        """A copy with ``values`` set (a sweep's best CNN keys, the timm name the weights gave)."""
        return ModelSpec.of({**self.as_dict(), **values})

    @property
    def multimodal(self) -> bool:
        return self.modality == "multimodal"

    @property
    def image_size(self) -> int:
        """The side the 63x63 triplet is resized to before the backbone."""
        return 63 if self.input_size is None else int(self.input_size)

    @property
    def scale(self) -> float:
        """The constant factor on the stored L2-normalised images (1: BTSbot's input)."""
        return 1.0 if self.input_scale is None else float(self.input_scale)

    @property
    def norm(self) -> str:
        """The regimen's input normalisation (``l2``: the stored triplet; ``weights``: the weights' own)."""
        return self.input_norm or "l2"

    @property
    def cnn_kwargs(self) -> dict[str, Any]:
        """The CNN's own keys, as its constructor takes them."""
        return {k: getattr(self, k) for k in CNN_KEYS}
