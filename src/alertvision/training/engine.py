"""The training engine: the one epoch loop behind fine-tuning, sweep trials and encoder pre-training.

:func:`fit` trains a model on ``train`` batches, measures the validation loss after every epoch,
keeps a CPU copy of the best epoch's weights and stops early when asked. What differs between the
callers comes in as a few objects: the step (:class:`Optimisation`: loss, optimiser, schedule stepped
per batch or per epoch), how long and how (:class:`FitSettings`: epochs, precision and memory format,
pacing), the validation and its extra metrics (:class:`Validation`), the best epoch and when to stop
(:class:`EarlyStopping`), where the state is saved (a :class:`~alertvision.training.checkpoint.Checkpointer`)
and a per-epoch hook (a sweep's pruning).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field, replace
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
EpochHook = Callable[[int, dict[str, Any]], None]


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


@dataclass(frozen=True)
class Optimisation:
    """A training step: ``loss_fn``, ``optimizer`` and its learning-rate ``scheduler``, stepped after every
    batch, or after every epoch with ``per_epoch``."""

    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    per_epoch: bool = False


@dataclass(frozen=True)
class FitSettings:
    """At most ``epochs`` epochs, batches on the device as ``precision`` says. A training batch of fewer than
    ``skip_below`` rows takes no step (a lone image breaks batch norm). ``min_epoch_s`` paces the training
    steps so that each epoch takes at least that long (the results do not change): it stretches a short run
    past a cluster's time limit to rehearse the checkpoints. ``name`` labels the log and the progress bar."""

    epochs: int
    precision: Precision
    skip_below: int = 1
    min_epoch_s: float | None = None
    name: str = "train"
    progress: bool = True


@dataclass(frozen=True)
class Validation:
    """The validation ``batches``; ``metrics(scores)`` adds columns to each history row from the per-row
    ``score(outputs)``."""

    batches: Batches
    score: Callable[[torch.Tensor], torch.Tensor] | None = None
    metrics: Callable[[np.ndarray], dict[str, float]] | None = None


@dataclass
class FitResult:
    """One row per epoch (epoch, train_loss, val_loss, extra metrics, lr, seconds) and the best epoch."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best: Best = field(default_factory=Best)


@dataclass
class FitState(FitResult):
    """A fit in progress, as a checkpoint keeps it: also the lowest validation loss so far (improvement or
    not: BTSbot's reference), the epochs done and whether early stopping ended the run."""

    lowest: float = float("inf")
    done: int = 0
    stopped: bool = False


@dataclass(frozen=True)
class EarlyStopping:
    """The best epoch and when to stop, on the validation loss (Keras' and Lightning's ``EarlyStopping``).

    An epoch is best when its validation loss undercuts the lowest so far by ``min_improvement``
    (0.005: BTSbot's 0.5%); with ``patience`` the run stops after that many epochs without one. The
    first ``start_from_epoch`` epochs (a warm-up) are neither candidates nor counted, as Keras'
    ``EarlyStopping(start_from_epoch=...)``: after a warm-up at a tiny learning rate the weights are
    still those of the start, whose validation loss a short run may never undercut. When it covers
    every epoch, the last one is the only candidate. ``keep`` is the module whose weights the best epoch
    keeps (default: the model fitted).
    """

    patience: int | None = None
    min_improvement: float = 0.0
    start_from_epoch: int = 0
    keep: nn.Module | None = None

    def within(self, epochs: int) -> EarlyStopping:
        """These settings for a fit of ``epochs``: a warm-up covering them all leaves the last epoch."""
        if not self.start_from_epoch >= epochs > 0:
            return self
        log.warning(
            "training.start_from_epoch %d leaves none of %d epochs to choose from: the last epoch is kept",
            self.start_from_epoch,
            epochs,
        )
        return replace(self, start_from_epoch=epochs - 1)

    def update(self, state: FitState, epoch: int, val_loss: float, model: nn.Module) -> None:
        """Take ``epoch`` as the best one, or stop the fit, as its validation loss says."""
        if epoch <= self.start_from_epoch:  # warm-up epochs are not monitored
            return
        if val_loss * (1.0 + self.min_improvement) < state.lowest:
            keep = model if self.keep is None else self.keep
            state.best = Best(val_loss, epoch, {k: v.detach().cpu().clone() for k, v in keep.state_dict().items()})
        elif self.patience is not None and epoch - max(state.best.epoch, self.start_from_epoch) >= self.patience:
            log.info("early stop: no improvement of the validation loss for %d epochs", self.patience)
            state.stopped = True
        state.lowest = min(state.lowest, val_loss)


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
    val: Validation,
    optim: Optimisation,
    settings: FitSettings,
    *,
    stopping: EarlyStopping = EarlyStopping(),
    checkpoint: Checkpointer | None = None,
    on_epoch: EpochHook | None = None,
) -> FitResult:
    """Train for at most ``settings.epochs``; the history and the best epoch (see :class:`EarlyStopping`).

    ``on_epoch(epoch, row)`` runs after each epoch's validation; what it raises ends the fit.
    With ``checkpoint`` the state after every epoch (and every ``checkpoint.every_s`` seconds within
    one) is saved there, a saved state of the same run is resumed from (see
    :mod:`alertvision.training.checkpoint`), and SIGTERM or SIGUSR1 save the state at the end of the
    current step and stop the run with :class:`Preempted` (exit status 75).
    """
    stopping, state = stopping.within(settings.epochs), FitState()
    saved = checkpoint.load() if checkpoint is not None else None
    resume_at = _resume(saved, model, optim, train, state) if saved is not None else None
    bar = _progress_bar(settings, train, state.done * len(train) + (resume_at["step"] if resume_at else 0))
    with stop_signals(checkpoint is not None) as signalled:

        def save(epoch: int, within: dict[str, Any] | None = None) -> None:
            checkpoint.save(_checkpoint_state(model, optim, train, state, epoch, within, signalled))

        for epoch in range(state.done + 1, settings.epochs + 1):
            if state.stopped:
                break
            pause = None if checkpoint is None else _pause_at(save, epoch)
            row = _epoch(
                model, train, val, optim, settings, epoch, _Steps(bar, resume_at, pause, checkpoint, signalled)
            )
            resume_at = None
            state.history.append(row)
            if on_epoch is not None:
                on_epoch(epoch, dict(row))
            stopping.update(state, epoch, row["val_loss"], model)
            if checkpoint is not None:
                save(epoch)
                if signalled:
                    raise Preempted(signalled[0])
    bar.close()
    return FitResult(state.history, state.best)


def _progress_bar(settings: FitSettings, train: Batches, done: int) -> tqdm:
    """The fit's progress in training steps, ``done`` of them already."""
    total = settings.epochs * len(train)
    return tqdm(
        total=total, initial=done, desc=settings.name, unit="step", disable=not settings.progress, mininterval=5
    )


def _pause_at(save: Callable[..., None], epoch: int) -> Callable[[int, tuple[float, int], torch.Tensor], None]:
    """What saves a checkpoint inside ``epoch``: at its ``step``, with the loss totals and the epoch's batch order."""

    def pause(step: int, totals: tuple[float, int], epoch_rng: torch.Tensor) -> None:
        save(epoch - 1, {"step": step, "totals": totals, "epoch_rng": epoch_rng})

    return pause


def _checkpoint_state(
    model: nn.Module,
    optim: Optimisation,
    train: Batches,
    state: FitState,
    epoch: int,
    within: dict[str, Any] | None,
    signalled: list[int],
) -> dict[str, Any]:
    """Everything the next epoch (or, ``within`` one, the next step) depends on."""
    return {
        "epoch": epoch,
        "within": within,
        "signal": signal.Signals(signalled[0]).name if signalled else None,
        "stopped": state.stopped,
        "lowest": state.lowest,
        "history": state.history,
        "best": vars(state.best),
        "model": model.state_dict(),
        "optimizer": optim.optimizer.state_dict(),
        "scheduler": optim.scheduler.state_dict(),
        "batches_rng": train.generator.get_state(),
        "rng": random_states(),
    }


def _resume(
    saved: Mapping[str, Any], model: nn.Module, optim: Optimisation, train: Batches, state: FitState
) -> dict[str, Any] | None:
    """Put back what :func:`_checkpoint_state` saved; the position inside epoch ``state.done + 1``, if any."""
    model.load_state_dict(saved["model"])
    optim.optimizer.load_state_dict(saved["optimizer"])
    optim.scheduler.load_state_dict(saved["scheduler"])
    state.history, state.best = saved["history"], Best(**saved["best"])
    state.lowest, state.done, state.stopped = saved["lowest"], saved["epoch"], saved["stopped"]
    train.generator.set_state(saved["batches_rng"])
    set_random_states(saved["rng"])
    return saved.get("within")  # a checkpoint written inside epoch done + 1


def _epoch(
    model: nn.Module,
    train: Batches,
    val: Validation,
    optim: Optimisation,
    settings: FitSettings,
    epoch: int,
    steps: _Steps,
) -> dict[str, Any]:
    """Train one epoch, then validate: its history row (epoch, losses, extra metrics, lr, seconds)."""
    started = time.time()
    lr = optim.optimizer.param_groups[0]["lr"]
    train_loss = _train_epoch(model, train, optim, settings, steps)
    if optim.per_epoch:
        optim.scheduler.step()  # the row keeps the rate the epoch trained at
    else:
        lr = optim.optimizer.param_groups[0]["lr"]
    scores, val_loss = evaluate(model, val.batches, optim.loss_fn, settings.precision, val.score)
    extra = val.metrics(scores) if val.metrics is not None else {}
    row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, **extra, "lr": lr}
    row["seconds"] = time.time() - started
    log.info(
        "%s epoch %d/%d: train loss %.4f, val loss %.4f%s (%.1f s)",
        settings.name,
        epoch,
        settings.epochs,
        train_loss,
        val_loss,
        "".join(f", {k} {v:.3f}" for k, v in extra.items()),
        row["seconds"],
    )
    return row


@dataclass
class _Steps:
    """An epoch's bookkeeping between steps: the progress ``bar``; ``resume_at``, a checkpoint written inside
    this epoch; ``pause``, which saves one (every ``checkpoint.every_s`` seconds, and at once when a stop
    signal arrived: ``signalled``)."""

    bar: tqdm
    resume_at: Mapping[str, Any] | None
    pause: Callable[[int, tuple[float, int], torch.Tensor], None] | None
    checkpoint: Checkpointer | None
    signalled: list[int]


def _train_epoch(
    model: nn.Module, batches: Batches, optim: Optimisation, settings: FitSettings, steps: _Steps
) -> float:
    """One pass over ``batches``; the mean training loss per row.

    ``steps.resume_at`` replays the epoch's batch order and augmentation up to its step without
    training, then goes on from the saved state. With ``settings.min_epoch_s`` the steps are paced at its
    share per step (a step that finishes early waits, unless a stop signal arrived), so that an epoch takes
    at least that long, resumed or not.
    """
    model.train()
    total, n, first = 0.0, 0, 0
    if steps.resume_at is not None:
        batches.generator.set_state(steps.resume_at["epoch_rng"])
        (total, n), first = steps.resume_at["totals"], steps.resume_at["step"]
    epoch_rng = batches.generator.get_state()
    every_s, signalled = steps.checkpoint.every_s if steps.checkpoint is not None else None, steps.signalled
    last_save = paced_from = time.monotonic()
    for step, (x, y, _) in enumerate(batches, start=1):
        if step <= first:  # replayed: the batches' own generator redraws order and augmentation; the global
            continue  # random states (dropout) were put back by fit as they were at the save
        steps.bar.update(1)
        if len(y) >= settings.skip_below:
            loss = _step(model, x, y, optim, settings.precision)
            total += loss.item() * len(y)
            n += len(y)
        if settings.min_epoch_s and not signalled:
            wait = paced_from + settings.min_epoch_s * (step - first) / len(batches) - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        if steps.pause is not None and (signalled or (every_s and time.monotonic() - last_save >= every_s)):
            steps.pause(step, (total, n), epoch_rng)
            last_save = time.monotonic()
            if signalled:
                raise Preempted(signalled[0])
    return total / max(n, 1)


def _step(model: nn.Module, x: Any, y: torch.Tensor, optim: Optimisation, precision: Precision) -> torch.Tensor:
    """One optimisation step on a batch; its loss."""
    x, y = precision.to_device(x), y.to(precision.device)
    with precision.autocast():
        out = model(x).float()
    loss = optim.loss_fn(out, y)
    optim.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optim.optimizer.step()
    if not optim.per_epoch:
        optim.scheduler.step()
    return loss
