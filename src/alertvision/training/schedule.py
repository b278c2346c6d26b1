"""Learning-rate schedules, as factors of the configured rate (``training.schedule``).

- ``epoch`` (BTSbot's: ``LinearLR(start_factor=0.01)`` over the warm-up epochs, then
  ``CosineAnnealingLR(T_max=epochs - warmup, eta_min=0.01 x lr)``, stepped once per epoch):
  :func:`epoch_warmup_cosine`.
- ``step``: linear warm-up from 0 per optimisation step, then cosine to 0 at the last step:
  :func:`warmup_cosine`.
"""

from __future__ import annotations

import math

SCHEDULES = ("epoch", "step")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate factor at ``step`` (0-based): 0 -> 1 over warm-up, then cosine to 0 at the end."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_warmup_cosine(
    epoch: int, warmup_epochs: float, horizon: int, start_factor: float = 0.01, floor_factor: float = 0.01
) -> float:
    """Learning-rate factor of ``epoch`` (0-based) under BTSbot's schedule.

    Warm-up: ``start_factor`` at epoch 0, rising linearly to 1 at ``warmup_epochs``; then a cosine from
    1 to ``floor_factor`` reached at epoch ``horizon`` (``T_max = max(1, horizon - warmup_epochs)``), and
    the floor after it (where PyTorch's cosine would rise again).
    """
    if warmup_epochs > 0 and epoch < warmup_epochs:
        return start_factor + (1.0 - start_factor) * epoch / warmup_epochs
    span = max(1.0, horizon - warmup_epochs)
    progress = min(1.0, (epoch - warmup_epochs) / span)
    return floor_factor + (1.0 - floor_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
