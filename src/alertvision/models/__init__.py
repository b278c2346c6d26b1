"""The model factory: one registry of architectures, one way to build, save and load a model."""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from alertvision import __version__
from alertvision.atomic import atomic_path
from alertvision.data.features import METADATA_FEATURES
from alertvision.models.classifier import AlertClassifier, LinearHead, MLPHead
from alertvision.models.cnn import BTSbotCNN
from alertvision.models.multimodal import MetadataBranch, MultimodalClassifier
from alertvision.models.weights import ResolvedWeights, load_pretrained_backbone
from alertvision.safeload import load_tensors, plain_data
from alertvision.settings import HeadSettings, ModelSpec

MODEL_FORMAT = "alertvision-model/1"
#: what to do with a model.pt that cannot be loaded
MODEL_FIX = "delete it and train the run again (alertvision train, or the Snakemake rule that makes it)"


def _timm_size_kwargs(architecture: str, input_size: int) -> dict[str, Any]:
    """timm models with a fixed input size (MaxViT) are built for ``input_size``; others need nothing."""
    import timm  # deferred: timm is heavy

    cfg = timm.models.get_pretrained_cfg(architecture)
    fixed = bool(getattr(cfg, "fixed_input_size", False)) if cfg is not None else False
    return {"img_size": input_size} if fixed else {}


def build_cnn(spec: ModelSpec, weights: ResolvedWeights | None) -> tuple[nn.Module, str]:
    if weights is not None:
        raise ValueError("the baseline CNN has no pretrained weights: train it with regimen 'none'")
    return BTSbotCNN(image_size=spec.image_size, **spec.cnn_kwargs), "relu"


def build_timm(spec: ModelSpec, weights: ResolvedWeights | None) -> tuple[nn.Module, str]:
    """A timm backbone without classifier: random init, or every backbone tensor of ``weights`` loaded."""
    import timm  # deferred: timm is heavy

    architecture = weights.architecture if weights is not None else spec.timm_name
    kwargs = _timm_size_kwargs(architecture, spec.image_size)
    if weights is None:
        backbone = timm.create_model(architecture, pretrained=False, num_classes=0, **kwargs)
    else:
        backbone = load_pretrained_backbone(weights, **kwargs)
    timm_head = spec.timm_head or "pool_norm"  # saved models from before the key pooled
    if timm_head not in TIMM_HEADS:
        raise ValueError(f"unknown timm_head {timm_head!r}; known: {', '.join(TIMM_HEADS)}")
    if timm_head == "flatten":
        _flatten_head(backbone, spec.image_size)
    backbone.timm_architecture = architecture
    return backbone, "gelu"


#: What a timm backbone keeps of its own head: pool_norm (timm's global pool + norm + flatten) or flatten
#: alone (BTSbot's multi-modal ConvNeXt on ZTF stamps); see ``config.multimodal_timm_head``.
TIMM_HEADS = ("pool_norm", "flatten")


def _flatten_head(backbone: nn.Module, input_size: int) -> None:
    """Leave only the flatten of a timm head with a norm (ConvNeXt's), as BTSbot's ``mm_ConvNeXt`` on ZTF
    stamps: its pretrained norm is dropped, as BTSbot drops it. Needs a 1x1 last feature map (a 63x63
    stamp), where the global pool changes nothing; heads without a norm (MaxViT's) stay as they are."""
    head = getattr(backbone, "head", None)
    if not isinstance(getattr(head, "norm", None), nn.Module) or isinstance(head.norm, nn.Identity):
        return
    with torch.no_grad():
        shape = tuple(backbone.forward_features(torch.zeros(1, 3, input_size, input_size)).shape[-2:])
    if shape != (1, 1):
        raise ValueError(
            f"timm_head 'flatten' needs the backbone's last feature map to be 1x1 (BTSbot's 63x63 ZTF stamps), "
            f"but input_size {input_size} ends at {shape[0]}x{shape[1]}: set multimodal.timm_head: pool_norm"
        )
    head.global_pool, head.norm = nn.Identity(), nn.Identity()


def build_none(spec: ModelSpec, weights: ResolvedWeights | None) -> tuple[None, str]:
    """No image backbone: the metadata-only model of Figure 3 (modality multimodal only), ReLU as
    BTSbot's metadata-only network (``um_nn``)."""
    if weights is not None:
        raise ValueError("the metadata-only model (arch 'none') has no backbone to start from pretrained weights")
    if not spec.multimodal:
        raise ValueError("architecture kind 'none' (no image backbone) exists only for modality 'multimodal'")
    if (spec.head or "mlp") not in METADATA_HEADS:
        raise ValueError(f"unknown metadata-only head {spec.head!r}; known: {', '.join(METADATA_HEADS)}")
    return None, "relu"


#: The metadata-only model's heads: um_nn (BTSbot's: the branch then Dense(1)) or mlp (the backbones' head
#: after the branch; models saved before the key).
METADATA_HEADS = ("um_nn", "mlp")


#: Architecture kinds by name; each builder returns (backbone with ``num_features`` or None, head activation).
ARCH_KINDS: dict[str, Callable[[ModelSpec, ResolvedWeights | None], tuple[nn.Module | None, str]]] = {
    "cnn": build_cnn,
    "timm": build_timm,
    "none": build_none,
}
MODALITIES = ("image", "multimodal")


def build_model(
    spec: ModelSpec | Mapping[str, Any],
    head_cfg: HeadSettings | Mapping[str, Any],
    weights: ResolvedWeights | None = None,
    input_norm: Mapping[str, Any] | None = None,
    metadata_fill: Sequence[float] | None = None,
    n_features: int | None = None,
    metadata_features: Sequence[str] | None = None,
) -> AlertClassifier:
    """Build a classifier from a model spec (:class:`~alertvision.settings.ModelSpec`; a mapping is read as
    its dict form, an ``archs.<name>`` block optionally with ``modality``) and the head sizes
    (:class:`~alertvision.settings.HeadSettings`, or a mapping with dense1, dense2
    (None: a one-layer head), dropout; multi-modal: also meta_dense1, meta_dense2, meta_dropout). The
    architecture kind sets the activation of the head and of the metadata branch (ReLU for BTSbot's
    CNN, GELU for timm backbones).

    ``input_norm`` is a spec of :mod:`alertvision.models.inputs` (as ``input_norm_for`` makes it from
    the regimen's ``input_norm``); None scales by the spec's ``input_scale``. ``metadata_fill``: per-feature values
    a multi-modal model puts in place of NaN or infinite features (None: none). ``metadata_features``: the
    names of a multi-modal model's features in input order, the dataset's survey's (None: ZTF's 25
    :data:`~alertvision.data.features.METADATA_FEATURES`); ``n_features``, if given, must be their number (alone:
    a branch of that many unnamed features, which :func:`save_model` refuses unless they are ZTF's 25).
    """
    spec = ModelSpec.of(spec)
    kind, modality = spec.kind, spec.modality
    head_settings = HeadSettings.from_config(head_cfg)
    if kind not in ARCH_KINDS:
        raise ValueError(f"unknown architecture kind {kind!r}; known: {', '.join(ARCH_KINDS)}")
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; known: {', '.join(MODALITIES)}")
    backbone, activation = ARCH_KINDS[kind](spec, weights)
    size, scale = spec.image_size, spec.scale
    if modality == "image":
        head = _mlp_head(backbone.num_features, head_settings, activation)
        return AlertClassifier(backbone, head, size, scale, input_norm)
    branch = head_settings.metadata
    if branch is None:
        raise ValueError("a multi-modal model needs the metadata branch's meta_dense1, meta_dense2 and meta_dropout")
    features: tuple[str, ...] | None = tuple(metadata_features) if metadata_features else None
    if features is not None and n_features is not None and int(n_features) != len(features):
        raise ValueError(f"n_features {n_features} but {len(features)} metadata features named: {', '.join(features)}")
    if features is None and n_features in (None, len(METADATA_FEATURES)):
        features = METADATA_FEATURES
    metadata = MetadataBranch(
        len(features) if features is not None else int(n_features),
        branch.meta_dense1,
        branch.meta_dense2,
        branch.meta_dropout,
        metadata_fill,
        activation,
        feature_names=features,
    )
    fused = metadata.out_features + (backbone.num_features if backbone is not None else 0)
    if backbone is None and spec.head == "um_nn":
        head = LinearHead(fused)  # BTSbot's um_nn: the branch, then Dense(1)
    else:
        head = _mlp_head(fused, head_settings, activation)
    return MultimodalClassifier(backbone, metadata, head, size, scale, input_norm)


def _mlp_head(in_features: int, head: HeadSettings, activation: str) -> MLPHead:
    return MLPHead(in_features, head.dense1, head.dense2, head.dropout, activation)


def save_model(
    model: AlertClassifier,
    path: str | os.PathLike,
    *,
    spec: ModelSpec | Mapping[str, Any],
    head_cfg: HeadSettings | Mapping[str, Any],
    info: Mapping[str, Any],
) -> None:
    """Save weights plus everything :func:`load_model` needs to rebuild the model without the weights source."""
    spec = ModelSpec.of(spec)
    if isinstance(model, MultimodalClassifier) and model.metadata.feature_names is None:
        raise ValueError(
            f"{path}: the model's {model.metadata.n_features} metadata features are unnamed: build it with "
            "metadata_features (the dataset's, Dataset.metadata_features) so that model.pt can say what it reads"
        )
    arch = getattr(model.backbone, "timm_architecture", None)
    if arch is not None:
        spec = spec.with_values(timm_name=arch)  # what the weights' config.json named, not what the config asked
    payload = plain_data(  # NumPy values in info or the settings as plain numbers: read back without unpickling
        {
            "format": MODEL_FORMAT,
            "alertvision_version": __version__,
            "arch_cfg": spec.as_dict(),  # the file's key from before the spec was typed
            "head_cfg": HeadSettings.from_config(head_cfg).as_dict(
                with_metadata=isinstance(model, MultimodalClassifier)
            ),
            "info": dict(info),
            "input_norm": model.input_norm.spec(),
            **(
                {
                    "metadata_features": list(model.metadata.feature_names),
                    "metadata_fill": model.metadata.fill_values.tolist() or None,
                }
                if isinstance(model, MultimodalClassifier)
                else {}
            ),
        }
    )
    payload["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_model_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The payload of a model.pt, read as tensors and plain data only (:mod:`alertvision.safeload`:
    a file holding anything else, a truncated or a foreign one is refused naming it)."""
    return load_tensors(path, fix=MODEL_FIX, map_location=map_location)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[AlertClassifier, dict]:
    """Rebuild a saved model (eval mode); returns (model, info). Files saved before input_norm scale as then."""
    return model_from_payload(read_model_file(path, map_location), path)


def model_from_payload(payload: Mapping[str, Any], path: str | os.PathLike) -> tuple[AlertClassifier, dict]:
    """The model (eval mode) and info of a model.pt payload already read (``path`` names it in errors)."""
    found = payload.get("format") if isinstance(payload, Mapping) else type(payload).__name__
    if found != MODEL_FORMAT:
        raise ValueError(f"{path} is not an alertvision model ({found!r}); {MODEL_FIX}")
    model = build_model(
        ModelSpec.from_dict(payload["arch_cfg"]),
        payload["head_cfg"],
        weights=None,
        input_norm=payload.get("input_norm"),
        metadata_fill=payload.get("metadata_fill"),
        metadata_features=payload.get("metadata_features"),  # files of a multi-modal model always name them
    )
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload["info"]
