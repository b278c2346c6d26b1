"""What Table 2 measures on and with: the machine (CPU name, devices, peak memory) and the alerts timed."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from alertvision.data.contract import open_dataset
from alertvision.evaluation.embeddings import split_rows

log = logging.getLogger(__name__)

# --- the machine ---------------------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or what the platform reports)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "CPU"


def device_name(device: torch.device) -> str:
    """The GPU's name for CUDA, the CPU model otherwise."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS (VmHWM) where Linux allows it; False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The process's peak resident set size in MB (VmHWM, else ru_maxrss)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def available_devices() -> list[torch.device]:
    """The CPU, then CUDA when present."""
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- the alerts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertInputs:
    """Images (memory-mapped or in memory), the rows of them to score, where they come from and what
    the rows are (``label``, the scope column of Table 2)."""

    images: np.ndarray
    rows: np.ndarray
    source: str
    label: str = "test split"


def split_inputs(dataset_dir: str | os.PathLike, split: str = "test") -> AlertInputs:
    """One split of a dataset folder (rows of alerts.parquet whose ``split`` matches), images memory-mapped."""
    data = open_dataset(dataset_dir)
    rows = split_rows(data.alerts, split)
    return AlertInputs(data.images, rows, f"{dataset_dir} ({split} split, {len(rows)} alerts)", f"{split} split")


def random_inputs(n: int = 2048, seed: int = 0, channels: int = 3, size: int = 63) -> AlertInputs:
    """Random L2-normalised cutouts in memory (for benchmarks that train nothing)."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, channels, size, size), dtype=np.float32)
    images /= np.linalg.norm(images.reshape(n, channels, -1), axis=-1)[..., None, None]
    return AlertInputs(images, np.arange(n), f"{n} random cutouts", "random cutouts")


def alert_sequence(rows: np.ndarray, min_alerts: int | None, batch_size: int) -> np.ndarray:
    """The rows one trial scores: ``rows`` once (``min_alerts`` None; the last batch may be short), or
    ``rows`` cycled to at least ``min_alerts``, in whole batches.

    Every sequence is a prefix of the same cycle, so two modes score the same alert at the same
    position whatever their batch sizes.
    """
    if min_alerts is None:
        return np.asarray(rows)
    n = math.ceil(max(min_alerts, 1) / batch_size) * batch_size
    return np.resize(np.asarray(rows), n)


def timed_scope(inputs: AlertInputs, n_timed: int) -> str:
    """What a trial of ``n_timed`` alerts scored: 'test split' (each alert once), 'test split cycled to N'
    or 'first N of the test split'."""
    n_rows = len(inputs.rows)
    if n_timed == n_rows:
        return inputs.label
    if n_timed > n_rows:
        return f"{inputs.label} cycled to {n_timed:,}"
    return f"first {n_timed:,} of the {inputs.label}"


def _chunks(seq: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(seq), batch_size):
        yield seq[start : start + batch_size]


def max_deviation(scores: np.ndarray, reference: np.ndarray) -> float:
    """max |scores - reference| over their common prefix (positions of the same alerts); inf if any is NaN."""
    n = min(len(scores), len(reference))
    if n == 0:
        return 0.0
    dev = np.abs(scores[:n].astype(np.float64) - reference[:n])
    return float(dev.max()) if np.all(np.isfinite(dev)) else float("inf")
