"""How stored cutouts become backbone inputs.

Stored images are L2-normalised per cutout (per-pixel RMS about 1/63) and the difference image can
be negative. BTSbot feeds every model, from random initialisation, ImageNet and Galaxy Zoo weights
alike, the stored triplet as it is: that is the paper's comparison, so every regimen's default
(``regimens.<name>.input_norm: l2``) is the stored triplet times the architecture's ``input_scale``
(1 by default). The other transforms are options a regimen names (see :func:`input_norm_for`).

Three modes, each a small JSON-able spec that a saved model keeps:

- ``scale`` (``{"mode": "scale", "scale": s}``): ``x * s``; s = 1 is BTSbot's input (63 gives a
  cutout unit per-pixel RMS).
- ``unit`` (``{"mode": "unit"}``): each image's each channel mapped onto [0, 1] by its own minimum
  and maximum, ``(x - min) / max(max - min, eps)``; a flat channel becomes 0. For weights that
  expect pixels in [0, 1] without mean/std (Zoobot). The mapping ignores any positive factor and
  any offset, so the L2 normalisation does not matter; the difference channel's zero level lands
  wherever its minimum and maximum put it (mid-grey for a symmetric dipole), not at a fixed value.
- ``imagenet`` (``{"mode": "imagenet", "mean": [...], "std": [...]}``): the ``unit`` mapping, then
  ``(x - mean) / std`` per channel with the weights' own pretraining mean and std.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from alertvision.models.weights import ResolvedWeights, hub_repo

MODES = ("scale", "unit", "imagenet")
#: The range below which a channel counts as flat. Cutouts of unit L2 norm have pixel ranges of
#: order 0.01-1, so 1e-6 only catches channels that are constant to float32 precision.
UNIT_EPS = 1e-6
#: Hugging Face organisations whose encoders are Zoobot's (pixels in [0, 1], no mean/std).
ZOOBOT_ORGS = ("mwalmsley",)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def unit_range(x: torch.Tensor, eps: float = UNIT_EPS) -> torch.Tensor:
    """Map each image's each channel of (B, C, H, W) onto [0, 1] by its own minimum and maximum."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(eps)


def input_norm_spec(spec: Mapping[str, Any] | None, input_scale: float = 1.0) -> dict[str, Any]:
    """A complete, checked spec; None means ``scale`` by ``input_scale`` (the behaviour before specs)."""
    if spec is None:
        return {"mode": "scale", "scale": float(input_scale)}
    mode = spec.get("mode")
    if mode == "scale":
        scale = float(spec.get("scale", input_scale))
        if not scale > 0:
            raise ValueError(f"input_norm scale must be positive, not {scale}")
        return {"mode": "scale", "scale": scale}
    if mode == "unit":
        return {"mode": "unit"}
    if mode == "imagenet":
        mean, std = [float(v) for v in spec.get("mean", ())], [float(v) for v in spec.get("std", ())]
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"input_norm imagenet needs 3 means and 3 positive stds, not {mean} / {std}")
        return {"mode": "imagenet", "mean": mean, "std": std}
    raise ValueError(f"unknown input_norm mode {mode!r}; known: {', '.join(MODES)}")


class InputNorm(nn.Module):
    """Apply an input-normalisation spec (see the module docstring) to a (B, 3, H, W) batch."""

    def __init__(self, spec: Mapping[str, Any] | None = None, input_scale: float = 1.0):
        super().__init__()
        self._spec = input_norm_spec(spec, input_scale)
        self.mode = self._spec["mode"]
        if self.mode == "imagenet":
            # not persistent: state dicts stay as they were before specs, so old model.pt files load
            self.register_buffer("mean", torch.tensor(self._spec["mean"]).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(self._spec["std"]).view(1, 3, 1, 1), persistent=False)

    def spec(self) -> dict[str, Any]:
        """The JSON-able spec, as saved with the model and recorded in metrics.json."""
        return dict(self._spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "scale":
            return x * self._spec["scale"] if self._spec["scale"] != 1.0 else x
        x = unit_range(x)
        if self.mode == "imagenet":
            x = (x - self.mean) / self.std
        return x

    def extra_repr(self) -> str:
        return json.dumps(self._spec)


def is_zoobot(weight_id: str) -> bool:
    """Whether a weight id names a Zoobot encoder."""
    repo = hub_repo(weight_id) if not weight_id.startswith("local-dir:") else None
    if not repo:
        return False
    return repo.split("/")[0].lower() in ZOOBOT_ORGS or "zoobot" in repo.lower()


def _origin_id(weights: ResolvedWeights) -> str:
    """The weight id the folder's files came from: a fetched folder's source.json knows it."""
    source = Path(weights.folder) / "source.json"
    if source.is_file():
        try:
            return str(json.loads(source.read_text()).get("weight_id") or weights.weight_id)
        except (json.JSONDecodeError, AttributeError):
            pass
    return weights.weight_id


def _mean_std(cfg: Mapping[str, Any]) -> tuple[Sequence[float], Sequence[float]] | None:
    """config.json's mean and std (timm's nested pretrained_cfg, or its older flat layout)."""
    pretrained = cfg.get("pretrained_cfg")
    block = pretrained if isinstance(pretrained, Mapping) else cfg
    mean, std = block.get("mean"), block.get("std")
    if mean is None or std is None:
        return None
    return mean, std


def _timm_mean_std(weight_id: str) -> tuple[Sequence[float], Sequence[float]] | None:
    """The mean and std timm registers for a timm tag (None for other ids)."""
    if weight_id.startswith(("hf_hub:", "hf-hub:", "local-dir:")):
        return None
    import timm  # deferred: timm is heavy

    cfg = timm.models.get_pretrained_cfg(weight_id)
    if cfg is None or cfg.mean is None or cfg.std is None:
        return None
    return cfg.mean, cfg.std


#: The values of ``regimens.<name>.input_norm``.
REGIMEN_INPUT_NORMS = ("l2", "unit", "imagenet", "weights")


def _weights_mean_std(weights: ResolvedWeights) -> tuple[list[float], list[float]] | None:
    """The mean and std the weights were pre-trained with (config.json, else timm's registry); None where
    they state none."""
    cfg_file = Path(weights.folder) / "config.json"
    cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    found = _mean_std(cfg) or _timm_mean_std(_origin_id(weights))
    if found is None:
        return None
    mean, std = [float(v) for v in found[0]], [float(v) for v in found[1]]
    if len(mean) == 1:
        mean, std = mean * 3, std * 3
    return mean, std


def input_norm_from_weights(weights: ResolvedWeights | None, input_scale: float = 1.0) -> dict[str, Any]:
    """The input normalisation the weights' own pre-training used (``input_norm: weights``).

    No weights: ``scale`` by ``input_scale``. Zoobot encoders: ``unit``, whatever their config.json
    says. Otherwise the mean/std of config.json's pretrained_cfg (or timm's, for a timm tag):
    ``imagenet`` with those values, or ``unit`` when there are none or they are 0 and 1.
    """
    if weights is None:
        return input_norm_spec({"mode": "scale", "scale": input_scale})
    if is_zoobot(_origin_id(weights)):
        return {"mode": "unit"}
    found = _weights_mean_std(weights)
    if found is None or (all(m == 0.0 for m in found[0]) and all(s == 1.0 for s in found[1])):
        return {"mode": "unit"}
    return input_norm_spec({"mode": "imagenet", "mean": found[0], "std": found[1]})


def input_norm_for(mode: str, weights: ResolvedWeights | None, input_scale: float = 1.0) -> dict[str, Any]:
    """The input-normalisation spec of a regimen's ``input_norm`` (see :data:`REGIMEN_INPUT_NORMS`).

    - ``l2`` (the default, BTSbot's): the stored L2-normalised triplet times ``input_scale``, whatever
      the weights;
    - ``unit``: each image's each channel min-max mapped onto [0, 1];
    - ``imagenet``: ``unit``, then the weights' own mean/std (ImageNet's where they state none);
    - ``weights``: what the weights' pre-training used (:func:`input_norm_from_weights`).
    """
    if mode == "l2":
        return input_norm_spec({"mode": "scale", "scale": input_scale})
    if mode == "unit":
        return {"mode": "unit"}
    if mode == "imagenet":
        found = _weights_mean_std(weights) if weights is not None else None
        mean, std = found if found is not None else (list(IMAGENET_MEAN), list(IMAGENET_STD))
        return input_norm_spec({"mode": "imagenet", "mean": mean, "std": std})
    if mode == "weights":
        return input_norm_from_weights(weights, input_scale)
    raise ValueError(f"unknown regimen input_norm {mode!r}; known: {', '.join(REGIMEN_INPUT_NORMS)}")
