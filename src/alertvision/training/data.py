"""Mini-batches read from the memory-mapped image array, with flips and 90-degree rotations.

A batch is made in two parts. Its *plan* (which rows, which flips and turns) is drawn from the
batches' own generator, always in the consuming thread and in one fixed order: the epoch's
permutation, then per batch the horizontal flips, vertical flips and turns. Its *making* (rows
gathered from the memory map in file order, each flipped and turned on the way into one float32
buffer, wrapped as a tensor) depends on the plan alone, so it may run ahead of the training step in
worker threads (``workers``): the batches, and so a training run on CPU, are bit-identical with and
without them (``tests/unit/test_input_pipeline.py``; ``benchmarks/input_pipeline.py`` measures the rates).
"""

from __future__ import annotations

import os
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

Batch = tuple[torch.Tensor | tuple | None, torch.Tensor, np.ndarray]


@dataclass(frozen=True)
class Flips:
    """Per-image augmentation draws: horizontal flip, vertical flip (bool) and turns by 90 degrees (0-3)."""

    hflip: np.ndarray
    vflip: np.ndarray
    turns: np.ndarray


def draw_flips(n: int, generator: torch.Generator) -> Flips:
    """The augmentation draws of ``n`` images, in the order :func:`augment` makes them."""
    hflip = torch.rand(n, generator=generator) < 0.5
    vflip = torch.rand(n, generator=generator) < 0.5
    turns = torch.randint(0, 4, (n,), generator=generator)
    return Flips(hflip.numpy(), vflip.numpy(), turns.numpy())


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip, vertical flip and rotation by k x 90 degrees, per image.

    The tensor form of what :func:`gather` does with the draws of :func:`draw_flips`; kept as the
    reference the fused path is tested against."""
    flips = draw_flips(x.shape[0], generator)
    hflip, vflip, k = (torch.from_numpy(a) for a in (flips.hflip, flips.vflip, flips.turns))
    x = x.clone()
    x[hflip] = x[hflip].flip(-1)
    x[vflip] = x[vflip].flip(-2)
    for turns in (1, 2, 3):
        sel = k == turns
        if sel.any():
            x[sel] = torch.rot90(x[sel], turns, dims=(-2, -1))
    return x


def gather(
    images: np.ndarray, rows: np.ndarray, flips: Flips | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """``images[rows]`` as float32 in ``out`` (a new array by default), each image flipped and turned as
    ``flips`` says.

    The images that take the same one of the 8 flips-and-turns are read together, in file order
    (sequential reads from a memory map), and written through one flipped and turned view: a few
    array operations per batch, not per image, so worker threads spend little time holding the GIL."""
    rows = np.asarray(rows)
    if out is None:
        out = np.empty((len(rows), *images.shape[1:]), dtype=np.float32)
    if flips is None:
        sort = np.argsort(rows, kind="stable")
        out[sort] = images[rows[sort]]
        return out
    # a vertical flip is a horizontal flip and half a turn: 8 distinct transforms, (flip, turns)
    flip = flips.hflip ^ flips.vflip
    turns = (flips.turns.astype(np.int64) + 2 * flips.vflip) % 4
    key = flip * 4 + turns
    for k in np.unique(key):
        idx = np.flatnonzero(key == k)
        idx = idx[np.argsort(rows[idx], kind="stable")]
        view = images[rows[idx]]
        if k >= 4:
            view = view[..., ::-1]
        if k % 4:
            view = np.rot90(view, int(k % 4), axes=(-2, -1))
        out[idx] = view
    return out


def gather_then_augment(images: np.ndarray, rows: np.ndarray, generator: torch.Generator | None) -> torch.Tensor:
    """The batch as the in-process design made it before the plan/make split (commit 4ae5bde): gather in
    file order, scatter, then :func:`augment` (with ``generator``; None: no augmentation). The reference
    of the equality tests and the baseline of ``benchmarks/input_pipeline.py``."""
    sort = np.argsort(rows, kind="stable")
    x = np.empty((len(rows), *images.shape[1:]), dtype=np.float32)
    x[sort] = images[rows[sort]]
    xt = torch.from_numpy(x)
    return augment(xt, generator) if generator is not None else xt


class ReadAhead:
    """Tells the kernel which rows of a memory-mapped .npy file a batch will read (posix_fadvise
    WILLNEED), so that it reads them all at once, in parallel, exactly those bytes: a page fault on a
    row not yet read would instead read the device's whole read-ahead window around it, one row at a time.
    A no-op for an array that is not a whole, C-ordered memory map of a file (as :func:`numpy.load` opens
    an .npy file, its data up to the end of the file)."""

    def __init__(self, images: np.ndarray | None):
        self.fd, self.offset, self.row_bytes = None, 0, 0
        filename = getattr(images, "filename", None)
        if filename is None or not len(images) or not images.flags.c_contiguous or not hasattr(os, "posix_fadvise"):
            return
        if int(images.offset) + images.nbytes != os.path.getsize(filename):  # a slice: its rows are not the file's
            return
        self.fd = os.open(filename, os.O_RDONLY)
        weakref.finalize(self, os.close, self.fd)
        self.offset, self.row_bytes = int(images.offset), int(images[0].nbytes)

    def __call__(self, rows: np.ndarray) -> None:
        if self.fd is None:
            return
        for row in np.unique(rows):
            os.posix_fadvise(self.fd, self.offset + int(row) * self.row_bytes, self.row_bytes, os.POSIX_FADV_WILLNEED)


@dataclass(frozen=True)
class Plan:
    """One batch before it is read: ``pos`` (positions into the batches' rows) and its augmentation draws."""

    pos: np.ndarray
    flips: Flips | None


class Batches:
    """Iterate (inputs, labels, positions) over ``rows`` of a memory-mapped (N, C, H, W) array.

    Only the rows of one batch are read at a time (``workers`` > 0: at most ``workers + ahead`` batches,
    made in that many threads ahead of the consumer; ``ahead`` defaults to ``workers``); ``positions``
    index into ``rows``. ``inputs`` is the image batch, or with ``metadata`` (an (N, F) array indexed
    like ``images``) the pair (images, metadata) a multi-modal model takes; ``images=None`` gives (None,
    metadata). A last batch smaller than ``min_batch`` is skipped (training: BatchNorm1d cannot train on
    one sample; with shuffling a different alert sits out each epoch). ``pin_memory`` puts the image
    batches in page-locked memory (CUDA only), for an asynchronous copy to the GPU. The batches do not
    depend on ``workers``, ``ahead`` or ``pin_memory``.
    """

    def __init__(
        self,
        images: np.ndarray | None,
        rows: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
        metadata: np.ndarray | None = None,
        min_batch: int = 1,
        workers: int = 0,
        ahead: int | None = None,
        pin_memory: bool = False,
    ):
        if images is None and metadata is None:
            raise ValueError("Batches needs images, metadata or both")
        if workers < 0:
            raise ValueError(f"Batches: workers must be 0 or more, got {workers}")
        self.images, self.rows, self.labels = images, np.asarray(rows), np.asarray(labels, dtype=np.float32)
        self.metadata = metadata
        self.batch_size, self.shuffle, self.augment, self.min_batch = batch_size, shuffle, augment, min_batch
        self.workers, self.ahead, self.pin_memory = int(workers), ahead, pin_memory
        self.generator = torch.Generator().manual_seed(int(seed))
        self.read_ahead = ReadAhead(images)

    def __len__(self) -> int:
        full, rest = divmod(len(self.rows), self.batch_size)
        return full + (rest >= max(self.min_batch, 1))

    def plans(self) -> Iterator[Plan]:
        """The epoch's batch plans, drawn from the generator as they are taken; the kernel is told of
        each plan's rows (:class:`ReadAhead`) when it is drawn."""
        n = len(self.rows)
        order = torch.randperm(n, generator=self.generator).numpy() if self.shuffle else np.arange(n)
        for start in range(0, n, self.batch_size):
            pos = order[start : start + self.batch_size]
            if len(pos) < self.min_batch:
                break
            draws = self.augment and self.images is not None
            if self.images is not None:
                self.read_ahead(self.rows[pos])
            yield Plan(pos, draw_flips(len(pos), self.generator) if draws else None)

    def make(self, plan: Plan) -> Batch:
        """The batch of ``plan``: its rows read, flipped and turned, as tensors. Thread-safe."""
        rows = self.rows[plan.pos]
        xt = None
        if self.images is not None:
            if self.pin_memory:
                xt = torch.empty((len(rows), *self.images.shape[1:]), dtype=torch.float32, pin_memory=True)
                gather(self.images, rows, plan.flips, out=xt.numpy())
            else:
                xt = torch.from_numpy(gather(self.images, rows, plan.flips))
        if self.metadata is not None:
            xt = (xt, torch.from_numpy(np.ascontiguousarray(self.metadata[rows], dtype=np.float32)))
        return xt, torch.from_numpy(self.labels[plan.pos]), plan.pos

    def __iter__(self) -> Iterator[Batch]:
        if self.workers == 0:
            return map(self.make, self.plans())
        ahead = self.workers if self.ahead is None else self.ahead
        return prefetch(self.plans(), self.make, self.workers, self.workers + ahead)


@dataclass(frozen=True)
class Loading:
    """How :class:`Batches` are made for a run: ``workers`` threads ahead of the step (0: in the training
    thread) and ``pin_memory``. The batches do not depend on it."""

    workers: int = 0
    pin_memory: bool = False

    @classmethod
    def for_device(cls, device: torch.device, workers: int | None = None) -> Loading:
        """The loading for ``device``: by default one worker thread and pinned memory on CUDA, where it
        overlaps the GPU's step (``benchmarks/input_pipeline.py``, column "+step"), and none on CPU, whose
        cores the step itself keeps busy."""
        cuda = device.type == "cuda"
        return cls(int(workers) if workers is not None else int(cuda), cuda)


def prefetch(plans: Iterator[Plan], make: Callable[[Plan], Batch], workers: int, depth: int) -> Iterator[Batch]:
    """``make(plan)`` for each plan, in order, made in ``workers`` threads up to ``depth`` batches ahead.

    The plans are taken here, in the consuming thread; closing the iterator early (a break, an
    exception in the consumer) cancels what is queued and waits for the threads."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batches")
    queue: list[Future] = []
    try:
        for plan in plans:
            queue.append(pool.submit(make, plan))
            if len(queue) >= max(depth, 1):
                yield queue.pop(0).result()
        while queue:
            yield queue.pop(0).result()
    finally:
        for job in queue:
            job.cancel()
        pool.shutdown(wait=True)


def to_device(
    x: torch.Tensor | tuple, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format
) -> torch.Tensor | tuple:
    """Move a batch's inputs (a tensor or an (images, metadata) pair) to ``device``; images in
    ``memory_format``. A pinned tensor is copied asynchronously."""
    if isinstance(x, tuple):
        return tuple(to_device(t, device, memory_format) if t is not None else None for t in x)
    fmt = memory_format if x.dim() == 4 else torch.contiguous_format
    return x.to(device, memory_format=fmt, non_blocking=x.is_pinned())
