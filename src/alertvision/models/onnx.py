"""A loaded model as an ONNX graph and an onnxruntime session: one export for Table 2 and for brokers.

The graph takes what the data contract stores, ``triplet`` (batch, 3, 63, 63) float32 and, for a
multi-modal model, ``metadata`` (batch, 25) raw features; the input transform, the resize and the fill
of non-finite features are inside it. It returns ``logit`` (batch,).
"""

from __future__ import annotations

import inspect
import io
import os
import warnings
from typing import Any

import torch
from torch import nn

from alertvision.data.features import METADATA_FEATURES
from alertvision.models.multimodal import MultimodalClassifier
from alertvision.models.runtime import METADATA_INPUT, OUTPUT, TRIPLET_INPUT, production_session

OPSET = 17


class _Graph(nn.Module):
    """The exported forward: named tensor inputs -> logits (B,)."""

    def __init__(self, model: nn.Module, images: bool, metadata: bool):
        super().__init__()
        self.model, self.images, self.metadata = model, images, metadata

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if not self.metadata:
            return self.model(inputs[0])
        images = inputs[0] if self.images else None
        return self.model((images, inputs[-1]))


def model_inputs(model: nn.Module) -> tuple[bool, bool]:
    """(takes the triplet, takes the metadata) of a model of the factory."""
    return (model.backbone is not None, isinstance(model, MultimodalClassifier))


def onnx_bytes(model: nn.Module) -> bytes:
    """The ONNX graph of a model (eval, float32, dynamic batch axis, opset :data:`OPSET`)."""
    takes_images, takes_metadata = model_inputs(model)
    example, names = [], []
    if takes_images:
        example.append(torch.zeros(2, 3, 63, 63))
        names.append(TRIPLET_INPUT)
    if takes_metadata:
        example.append(torch.zeros(2, int(getattr(model.metadata, "n_features", len(METADATA_FEATURES)))))
        names.append(METADATA_INPUT)
    axes = {name: {0: "batch"} for name in [*names, OUTPUT]}
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            # the wrapper in eval mode too: the exporter restores the wrapper's mode on every submodule after
            # tracing, and a fresh module is in training mode (dropout on in the model afterwards)
            _Graph(model, takes_images, takes_metadata).eval(),
            tuple(example),
            buf,
            input_names=names,
            output_names=[OUTPUT],
            dynamic_axes=axes,
            opset_version=OPSET,
            **legacy,
        )
    return buf.getvalue()


def ort_session(data: bytes | str | os.PathLike, threads: int = 1) -> Any:
    """An onnxruntime CPU session of an ONNX model (bytes or a file): ``threads`` intra-op threads and
    the rest of the production options of :func:`alertvision.models.runtime.session_options` (sequential,
    every graph optimisation), float32."""
    return production_session(data, threads)
