"""Table 2's settings (the ``benchmark`` config block) and the records it keeps: rows, candidates."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import torch

log = logging.getLogger(__name__)


PAPER, PRODUCTION = "paper", "production"


# --- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchSettings:
    """The ``benchmark`` config block, flattened (defaults are the schema's).

    ``int8``: offer the int8 graph of :mod:`alertvision.models.runtime` as a CPU production candidate.
    Like every candidate it is chosen only when all its scores are within ``tolerance`` of the paper
    mode's float32 scores.
    """

    batch_size: int = 32
    trials: int = 3
    min_alerts: int | None = 1024
    gpu_min_alerts: int | None = 16384
    cpu_threads: int = 2
    gpu_batch_size: int = 1024
    cpu_batch_size: int = 256
    compile: bool = False
    tolerance: float = 1e-3
    train_steps: int = 5
    train_warmup: int = 2
    probe_seconds: float = 0.5
    int8: bool = True

    @classmethod
    def from_config(cls, block: Mapping[str, Any]) -> "BenchSettings":
        """Settings from a validated ``benchmark`` block (unknown keys such as ``enabled`` are ignored)."""
        prod = dict(block.get("production", {}))
        flat = {**{k: v for k, v in block.items() if k != "production"}, **prod}
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in flat.items() if k in names})

    def min_alerts_for(self, device: torch.device) -> int | None:
        """Alerts per trial on ``device`` (GPUs need more work per trial to be timed); None: the whole
        split once per trial."""
        return self.gpu_min_alerts if device.type == "cuda" else self.min_alerts


@dataclass
class Row:
    """One row of Table 2."""

    arch: str
    timm_name: str
    input_size: int
    mode: str
    device: str
    threads: int
    batch_size: int
    alerts_per_s: float
    speedup: float
    peak_memory_mb: float
    memory: str
    max_score_dev: float
    within_tolerance: bool
    setup: str
    alerts_timed: int
    scope: str
    trials: int


@dataclass
class Candidate:
    """What the production search learnt about one candidate."""

    device: str
    setup: str
    batch_size: int
    probe_alerts_per_s: float | None = None
    first_batch_dev: float | None = None
    chosen: bool = False
    rejected: str | None = None
