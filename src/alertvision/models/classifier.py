"""The classifier every architecture becomes: backbone embedding -> 3-layer MLP head -> one logit."""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from alertvision.models.inputs import InputNorm


def activation_layer(activation: str) -> nn.Module:
    """The layer of an activation name (``gelu`` or ``relu``)."""
    if activation not in ("gelu", "relu"):
        raise ValueError(f"unknown activation {activation!r}; known: gelu, relu")
    return nn.GELU() if activation == "gelu" else nn.ReLU()


class MLPHead(nn.Module):
    """Dense(dense1) -> act -> Dense(dense2) -> act -> Dropout -> Dense(1), as BTSbot's PyTorch heads.

    ``dense2=None`` leaves out the second Dense: Dense(dense1) -> act -> Dropout -> Dense(1), the
    combined head of BTSbot's production CNN (Dense(8), dropout 0.20).
    """

    def __init__(self, in_features: int, dense1: int, dense2: int | None, dropout: float, activation: str = "gelu"):
        super().__init__()
        layers = [nn.Linear(in_features, dense1), activation_layer(activation)]
        if dense2:
            layers += [nn.Linear(dense1, dense2), activation_layer(activation)]
        self.body = nn.Sequential(*layers, nn.Dropout(dropout))
        self.out = nn.Linear(dense2 or dense1, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate-layer embedding: the input of the final Linear."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


class LinearHead(nn.Module):
    """Dense(1) alone: the end of BTSbot's metadata-only network (``um_nn``), whose embedding is its input."""

    def __init__(self, in_features: int):
        super().__init__()
        self.body = nn.Identity()
        self.out = nn.Linear(in_features, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate-layer embedding: the input of the final Linear."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


class AlertClassifier(nn.Module):
    """Normalise and resize the 63x63 input for the backbone, embed, classify. ``forward`` returns logits (B,).

    ``input_norm`` is a spec of :mod:`alertvision.models.inputs` (``scale``, ``unit``, ``imagenet``),
    chosen to match the weights the backbone starts from; None means ``scale`` by ``input_scale``.
    ``scale`` multiplies the stored (L2-normalised) images: a cutout of unit L2 norm has a
    per-pixel RMS of 1/63, and a factor of 63 gives the default initialisations unit-scale inputs.
    A constant factor changes no information, only how fast training leaves its starting point.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: MLPHead | LinearHead,
        input_size: int,
        input_scale: float = 1.0,
        input_norm: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.input_size = int(input_size)
        self.input_norm = InputNorm(input_norm, input_scale)

    @property
    def input_scale(self) -> float:
        """The constant factor of the ``scale`` mode (1.0 in the other modes)."""
        return float(self.input_norm.spec().get("scale", 1.0))

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_norm(x)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return x

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer embeddings (B, dense2), or (B, dense1) for a one-layer head."""
        return self.head.forward_features(self.backbone(self._resize(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self._resize(x))).squeeze(-1)
