"""Mini-batches read from the memory-mapped image array, with flips and 90-degree rotations."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip, vertical flip and rotation by k x 90 degrees, per image."""
    n = x.shape[0]
    hflip = torch.rand(n, generator=generator) < 0.5
    vflip = torch.rand(n, generator=generator) < 0.5
    k = torch.randint(0, 4, (n,), generator=generator)
    x = x.clone()
    x[hflip] = x[hflip].flip(-1)
    x[vflip] = x[vflip].flip(-2)
    for turns in (1, 2, 3):
        sel = k == turns
        if sel.any():
            x[sel] = torch.rot90(x[sel], turns, dims=(-2, -1))
    return x


class Batches:
    """Iterate (inputs, labels, positions) over ``rows`` of a memory-mapped (N, C, H, W) array.

    Only the rows of one batch are read at a time; ``positions`` index into ``rows``. ``inputs`` is
    the image batch, or with ``metadata`` (an (N, F) array indexed like ``images``) the pair
    (images, metadata) a multi-modal model takes; ``images=None`` gives (None, metadata). A last
    batch smaller than ``min_batch`` is skipped (training: BatchNorm1d cannot train on one sample;
    with shuffling a different alert sits out each epoch).
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
    ):
        if images is None and metadata is None:
            raise ValueError("Batches needs images, metadata or both")
        self.images, self.rows, self.labels = images, np.asarray(rows), np.asarray(labels, dtype=np.float32)
        self.metadata = metadata
        self.batch_size, self.shuffle, self.augment, self.min_batch = batch_size, shuffle, augment, min_batch
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        full, rest = divmod(len(self.rows), self.batch_size)
        return full + (rest >= max(self.min_batch, 1))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
        n = len(self.rows)
        order = torch.randperm(n, generator=self.generator).numpy() if self.shuffle else np.arange(n)
        for start in range(0, n, self.batch_size):
            pos = order[start : start + self.batch_size]
            if len(pos) < self.min_batch:
                break
            rows = self.rows[pos]
            xt = None
            if self.images is not None:
                sort = np.argsort(rows, kind="stable")  # sequential reads from the memmap
                x = np.empty((len(rows), *self.images.shape[1:]), dtype=np.float32)
                x[sort] = self.images[rows[sort]]
                xt = torch.from_numpy(x)
                if self.augment:
                    xt = augment(xt, self.generator)
            if self.metadata is not None:
                xt = (xt, torch.from_numpy(np.ascontiguousarray(self.metadata[rows], dtype=np.float32)))
            yield xt, torch.from_numpy(self.labels[pos]), pos


def to_device(
    x: torch.Tensor | tuple, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format
) -> torch.Tensor | tuple:
    """Move a batch's inputs (a tensor or an (images, metadata) pair) to ``device``; images in
    ``memory_format``."""
    if isinstance(x, tuple):
        return tuple(to_device(t, device, memory_format) if t is not None else None for t in x)
    return x.to(device, memory_format=memory_format if x.dim() == 4 else torch.contiguous_format)
