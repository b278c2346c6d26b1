"""Checkpoints: a training run that is killed resumes where its last finished epoch left it.

A checkpoint holds everything the next epoch depends on: the model, the optimiser, the schedule,
the early-stopping state (lowest validation loss, the best epoch and its weights), the history so
far, and every random state (Python, NumPy, torch CPU and CUDA, the training batches' generator),
so that on CPU a resumed run ends bit for bit where an uninterrupted one does. It is written
atomically at the end of every epoch under a name that is not an output of the run (Snakemake
leaves it in place when a job dies) and carries a digest of the run's parameters: a checkpoint of
other parameters (the config changed) is ignored and replaced, never mixed in. It holds tensors and
plain data only and is read by :func:`alertvision.safeload.load_tensors`: a torn one (truncated, not
a PyTorch file) starts the run again from epoch 1, one holding anything else stops the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from alertvision.atomic import atomic_path, clean_stale_temporaries
from alertvision.safeload import TruncatedFileError, UnreadableFileError, load_tensors

log = logging.getLogger(__name__)

#: the file name of a run's checkpoint, inside its run folder (a dot file: never an output)
CHECKPOINT_NAME = ".checkpoint.pt"


def params_digest(params: Mapping[str, Any], files: tuple[str | os.PathLike, ...] = ()) -> str:
    """A digest of a run's parameters and of the bytes of the input ``files`` it reads."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for path in files:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def random_states() -> dict[str, Any]:
    """The global random states a training step draws from, as tensors and plain data (NumPy's key
    array as a list of ints: a checkpoint is read back without unpickling NumPy objects)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return {
        "python": random.getstate(),
        "numpy": [str(name), [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_random_states(states: Mapping[str, Any]) -> None:
    """Put back what :func:`random_states` took."""
    random.setstate(states["python"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@dataclass
class Checkpointer:
    """Where one run keeps its checkpoint (``path``), the digest (``key``) of the run it belongs to, and how
    often it is also saved within an epoch (every ``every_s`` seconds; None: only after each epoch)."""

    path: Path
    key: str
    every_s: float | None = None

    def load(self) -> dict[str, Any] | None:
        """The saved state of this run, or None (no checkpoint, another run's, or a torn one).

        A file holding anything but tensors and plain data is not loaded: it raises
        :class:`~alertvision.safeload.UnsafeFileError` naming it (it is neither replaced nor deleted).
        """
        clean_stale_temporaries([self.path])  # what a save killed half-way left
        if not self.path.is_file():
            return None
        try:
            state = load_tensors(
                self.path,
                fix="alertvision does not write such a checkpoint (one saved by a version before it wrote "
                "plain data only aside): delete it and rerun, the run starts again from epoch 1",
            )
        except (TruncatedFileError, UnreadableFileError) as exc:  # torn: start again rather than stop the run
            log.warning("checkpoint %s is unreadable (%s); starting from epoch 1", self.path, exc.problem)
            return None
        if not isinstance(state, dict) or state.get("key") != self.key:
            log.warning(
                "checkpoint %s belongs to other parameters (the config changed); ignored and replaced", self.path
            )
            return None
        within = state.get("within")
        log.info(
            "resuming from %s%s: %d epochs done%s",
            self.path,
            f" (saved on {state['signal']})" if state.get("signal") else "",
            state["epoch"],
            f", then {within['step']} steps of the next" if within else "",
        )
        return state

    def save(self, state: Mapping[str, Any]) -> None:
        """Write ``state`` (with this run's key) atomically: a kill leaves the previous checkpoint whole,
        a full disk stops the run naming the path (:class:`~alertvision.atomic.DiskFullError`)."""
        with atomic_path(self.path) as tmp:
            torch.save({**state, "key": self.key}, tmp)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
