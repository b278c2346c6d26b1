"""The training engine: the one epoch loop behind fine-tuning, sweep trials and encoder pre-training.

:func:`fit` trains a model on ``train`` batches, measures the validation loss after every epoch,
keeps a CPU copy of the best epoch's weights and stops early when asked. What differs between the
callers comes in as arguments: the loss, the optimiser and its schedule (stepped per batch or per
epoch), precision (``autocast``), memory format, extra per-epoch validation metrics, the module
whose weights are kept, and a per-epoch callback (a sweep's pruning).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Mapping

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from alertvision.training.checkpoint import Checkpointer, random_states, set_random_states
from alertvision.training.data import Batches, to_device
from alertvision.training.signals import PREEMPTED_EXIT, STOP_SIGNALS, Preempted, stop_signals  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Best:
    """The best epoch so far: its validation loss, its number (0: none yet) and a CPU copy of the weights."""

    val_loss: float = float("inf")
    epoch: int = 0
    state: dict[str, torch.Tensor] | None = None


@dataclass
class Precision:
    """How batches reach the model: on ``device``, under bf16 autocast or in float32, images in ``memory_format``."""

    device: torch.device
    bf16: bool = False
    memory_format: torch.memory_format = torch.contiguous_format

    def autocast(self) -> ContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def to_device(self, x: torch.Tensor | tuple) -> torch.Tensor | tuple:
        return to_device(x, self.device, self.memory_format)


@dataclass
class FitResult:
    """One row per epoch (epoch, train_loss, val_loss, extra metrics, lr, seconds) and the best epoch."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best: Best = field(default_factory=Best)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Batches,
    loss_fn: LossFn,
    precision: Precision,
    score: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[np.ndarray | None, float]:
    """(per-row ``score(outputs)`` in the order of ``batches.rows``, None without ``score``; the mean loss).

    The model is put in eval mode."""
    model.eval()
    scores = np.empty(len(batches.rows), dtype=np.float32) if score is not None else None
    total, n = 0.0, 0
    for x, y, pos in batches:
        x, y = precision.to_device(x), y.to(precision.device)
        with precision.autocast():
            out = model(x).float()
        total += float(loss_fn(out, y)) * len(y)
        n += len(y)
        if scores is not None:
            scores[pos] = score(out).cpu().numpy()
    return scores, total / max(n, 1)


def fit(
    model: nn.Module,
    train: Batches,
    val: Batches,
    *,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epochs: int,
    precision: Precision,
    schedule_per_epoch: bool = False,
    patience: int | None = None,
    min_improvement: float = 0.0,
    start_from_epoch: int = 0,
    val_score: Callable[[torch.Tensor], torch.Tensor] | None = None,
    val_metrics: Callable[[np.ndarray], dict[str, float]] | None = None,
    keep: nn.Module | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    skip_below: int = 1,
    checkpoint: Checkpointer | None = None,
    checkpoint_every_s: float | None = None,
    min_epoch_s: float | None = None,
    name: str = "train",
    progress: bool = True,
) -> FitResult:
    """Train for at most ``epochs``; the history and the best epoch (lowest validation loss).

    An epoch is best when its validation loss undercuts the lowest so far by ``min_improvement``
    (0.005: BTSbot's 0.5%); with ``patience`` the run stops after that many epochs without one. The
    first ``start_from_epoch`` epochs (a warm-up) are neither candidates nor counted, as Keras'
    ``EarlyStopping(start_from_epoch=...)``: after a warm-up at a tiny learning rate the weights are
    still those of the start, whose validation loss a short run may never undercut. When it covers
    every epoch, the last one is the only candidate.
    ``val_metrics(scores)`` adds columns to each history row from the validation ``val_score``s.
    ``keep`` is the module whose weights the best epoch keeps (default: ``model``). A training
    batch of fewer than ``skip_below`` rows takes no step (a lone image breaks batch norm).
    ``on_epoch(epoch, row)`` runs after each epoch's validation; what it raises ends the fit.
    With ``checkpoint`` the state after every epoch (and every ``checkpoint_every_s`` seconds within
    one) is saved there, a saved state of the same run is resumed from (see
    :mod:`alertvision.training.checkpoint`), and SIGTERM or SIGUSR1 save the state at the end of the
    current step and stop the run with :class:`Preempted` (exit status 75).
    ``min_epoch_s`` paces the training steps so that each epoch takes at least that long (the results do
    not change): it stretches a short run past a cluster's time limit to rehearse the checkpoints.
    """
    if start_from_epoch >= epochs > 0:
        log.warning(
            "training.start_from_epoch %d leaves none of %d epochs to choose from: the last epoch is kept",
            start_from_epoch,
            epochs,
        )
        start_from_epoch = epochs - 1
    keep = model if keep is None else keep
    result = FitResult()
    lowest = float("inf")  # the lowest validation loss so far, improvement or not (BTSbot's reference)
    done, stopped, resume_at = 0, False, None
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        result.history, result.best = saved["history"], Best(**saved["best"])
        lowest, done, stopped = saved["lowest"], saved["epoch"], saved["stopped"]
        train.generator.set_state(saved["batches_rng"])
        set_random_states(saved["rng"])
        resume_at = saved.get("within")  # a checkpoint written inside epoch done + 1

    def save(epoch: int, within: dict[str, Any] | None = None) -> None:
        checkpoint.save(
            {
                "epoch": epoch,
                "within": within,
                "signal": signal.Signals(signalled[0]).name if signalled else None,
                "stopped": stopped,
                "lowest": lowest,
                "history": result.history,
                "best": vars(result.best),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "batches_rng": train.generator.get_state(),
                "rng": random_states(),
            }
        )

    bar = tqdm(
        total=epochs * len(train),
        initial=done * len(train) + (resume_at["step"] if resume_at else 0),
        desc=name,
        unit="step",
        disable=not progress,
        mininterval=5,
    )
    with stop_signals(checkpoint is not None) as signalled:
        for epoch in range(done + 1, epochs + 1):
            if stopped:
                break
            started = time.time()
            lr = optimizer.param_groups[0]["lr"]
            pause = None
            if checkpoint is not None:

                def pause(step: int, totals: tuple[float, int], epoch_rng: torch.Tensor, epoch=epoch) -> None:
                    save(epoch - 1, {"step": step, "totals": totals, "epoch_rng": epoch_rng})

            train_loss = _train_epoch(
                model,
                train,
                loss_fn,
                optimizer,
                scheduler,
                precision,
                schedule_per_epoch,
                skip_below,
                bar,
                resume_at,
                pause,
                checkpoint_every_s,
                signalled,
                min_epoch_s,
            )
            resume_at = None
            if schedule_per_epoch:
                scheduler.step()  # the row keeps the rate the epoch trained at
            else:
                lr = optimizer.param_groups[0]["lr"]
            scores, val_loss = evaluate(model, val, loss_fn, precision, val_score)
            extra = val_metrics(scores) if val_metrics is not None else {}
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, **extra, "lr": lr}
            row["seconds"] = time.time() - started
            result.history.append(row)
            log.info(
                "%s epoch %d/%d: train loss %.4f, val loss %.4f%s (%.1f s)",
                name,
                epoch,
                epochs,
                train_loss,
                val_loss,
                "".join(f", {k} {v:.3f}" for k, v in extra.items()),
                row["seconds"],
            )
            if on_epoch is not None:
                on_epoch(epoch, dict(row))
            if epoch > start_from_epoch:  # warm-up epochs are not monitored
                if val_loss * (1.0 + min_improvement) < lowest:
                    state = {k: v.detach().cpu().clone() for k, v in keep.state_dict().items()}
                    result.best = Best(val_loss, epoch, state)
                elif patience is not None and epoch - max(result.best.epoch, start_from_epoch) >= patience:
                    log.info("early stop: no improvement of the validation loss for %d epochs", patience)
                    stopped = True
                lowest = min(lowest, val_loss)
            if checkpoint is not None:
                save(epoch)
                if signalled:
                    raise Preempted(signalled[0])
    bar.close()
    return result


def _train_epoch(
    model: nn.Module,
    batches: Batches,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    precision: Precision,
    schedule_per_epoch: bool,
    skip_below: int,
    bar: tqdm,
    resume_at: Mapping[str, Any] | None = None,
    pause: Callable[[int, tuple[float, int], torch.Tensor], None] | None = None,
    every_s: float | None = None,
    signalled: list[int] | None = None,
    min_epoch_s: float | None = None,
) -> float:
    """One pass over ``batches``; the mean training loss per row.

    ``resume_at`` (a checkpoint written inside this epoch) replays the epoch's batch order and
    augmentation up to its step without training, then goes on from the saved state. ``pause`` saves
    such a checkpoint: every ``every_s`` seconds, and at once when a stop signal arrived. With
    ``min_epoch_s`` the steps are paced at its share per step (a step that finishes early waits, unless a
    stop signal arrived), so that an epoch takes at least that long, resumed or not.
    """
    model.train()
    total, n, first = 0.0, 0, 0
    if resume_at is not None:
        batches.generator.set_state(resume_at["epoch_rng"])
        (total, n), first = resume_at["totals"], resume_at["step"]
    epoch_rng = batches.generator.get_state()
    last_save = paced_from = time.monotonic()
    for step, (x, y, _) in enumerate(batches, start=1):
        if step <= first:  # replayed: the batches' own generator redraws order and augmentation; the global
            continue  # random states (dropout) were put back by fit as they were at the save
        bar.update(1)
        if len(y) >= skip_below:
            x, y = precision.to_device(x), y.to(precision.device)
            with precision.autocast():
                out = model(x).float()
            loss = loss_fn(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if not schedule_per_epoch:
                scheduler.step()
            total += loss.item() * len(y)
            n += len(y)
        if min_epoch_s and not signalled:
            wait = paced_from + min_epoch_s * (step - first) / len(batches) - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        if pause is not None and (signalled or (every_s and time.monotonic() - last_save >= every_s)):
            pause(step, (total, n), epoch_rng)
            last_save = time.monotonic()
            if signalled:
                raise Preempted(signalled[0])
    return total / max(n, 1)
