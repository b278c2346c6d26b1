"""The multi-modal classifier of Figure 3: an image backbone's embedding beside BTSbot's metadata branch.

Inputs are a pair ``(images, metadata)``: images (B, 3, 63, 63) as for the image models, metadata
(B, F) in the order of the branch's ``feature_names`` (the dataset's survey's: ZTF's 25
:data:`alertvision.data.features.METADATA_FEATURES` by default). The metadata-only model
(arch ``none``) has no backbone and ignores the images (``None`` is fine).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from alertvision.models.classifier import AlertClassifier, LinearHead, MLPHead, activation_layer


class MetadataBranch(nn.Module):
    """BatchNorm1d on the features, then Dense -> act -> Dropout -> Dense -> act (BTSbot's branch: ReLU
    beside its CNN, GELU beside ConvNeXt and MaxViT).

    ``fill_values`` (one per feature) replace NaN or infinite features before the BatchNorm, so a
    deployed model fills exactly as in training; without them non-finite features pass through.
    ``feature_names``: the features' names in input order (saved in model.pt; none: unnamed).
    """

    def __init__(
        self,
        n_features: int,
        dense1: int,
        dense2: int,
        dropout: float,
        fill_values: Sequence[float] | None = None,
        activation: str = "gelu",
        feature_names: Sequence[str] | None = None,
    ):
        super().__init__()
        self.n_features = int(n_features)
        self.feature_names = tuple(feature_names) if feature_names is not None else None
        if self.feature_names is not None and len(self.feature_names) != self.n_features:
            raise ValueError(f"{len(self.feature_names)} feature names for {n_features} metadata features")
        self.body = nn.Sequential(
            nn.BatchNorm1d(n_features),
            nn.Linear(n_features, dense1),
            activation_layer(activation),
            nn.Dropout(dropout),
            nn.Linear(dense1, dense2),
            activation_layer(activation),
        )
        fill = torch.as_tensor(list(fill_values) if fill_values is not None else [], dtype=torch.float32)
        if fill.numel() not in (0, n_features):
            raise ValueError(f"{fill.numel()} fill values for {n_features} metadata features")
        self.register_buffer("fill_values", fill)
        self.out_features = int(dense2)

    def forward(self, metadata: torch.Tensor) -> torch.Tensor:
        if self.fill_values.numel():
            metadata = torch.where(torch.isfinite(metadata), metadata, self.fill_values.to(metadata.dtype))
        return self.body(metadata)


class MultimodalClassifier(AlertClassifier):
    """[backbone embedding, metadata branch output] -> the MLP head -> one logit. ``forward`` takes
    ``(images, metadata)`` and returns logits (B,); ``backbone=None`` is the metadata-only model."""

    def __init__(
        self,
        backbone: nn.Module | None,
        metadata: MetadataBranch,
        head: MLPHead | LinearHead,
        input_size: int = 63,
        input_scale: float = 1.0,
        input_norm: Mapping[str, Any] | None = None,
    ):
        super().__init__(backbone, head, input_size, input_scale, input_norm)
        self.metadata = metadata

    def _fused(self, x: tuple[torch.Tensor | None, torch.Tensor]) -> torch.Tensor:
        images, metadata = x
        parts = [] if self.backbone is None else [self.backbone(self._resize(images))]
        parts.append(self.metadata(metadata))
        return torch.cat(parts, dim=1)

    def embed(self, x: tuple[torch.Tensor | None, torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        """Penultimate-layer embeddings of the fusion head (the input of its last Linear)."""
        return self.head.forward_features(self._fused(x))

    def forward(self, x: tuple[torch.Tensor | None, torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return self.head(self._fused(x)).squeeze(-1)
