"""Training input pipeline: alerts/s delivered, the design before the loader against the loader, in one run.

Writes a SYNTHETIC ``images.npy`` of the paper's size (769,000 x 3 x 63 x 63 float32, 36.6 GB; ``--n``
to change it) unless it exists, then measures the batches a training epoch takes (rows, labels,
flips and turns, as tensors) at ``--batch``:

- ``before``: the in-process design of commit 4ae5bde (gather, scatter, then tensor augmentation,
  between steps: :func:`alertvision.training.data.gather_then_augment`), the baseline;
- ``loader w=0``: the loader's fused gather-and-flip in the training thread;
- ``loader w=N``: the loader with N worker threads assembling batches ahead of the step;
- ``w=N no hint``: the same without telling the kernel the planned rows (:class:`~alertvision.training.data.ReadAhead`).

Each one is measured from page cache (rows drawn from the first ``--cache-rows`` images, read once
before) and from disk (rows drawn from the whole file; the file's cached pages are dropped before
each measurement with posix_fadvise DONTNEED, or ``echo 3 > /proc/sys/vm/drop_caches`` with
``--drop-caches``, root only). Also: the rate of a training loop whose step takes as long as a GPU
consuming ``--appetite`` alerts/s (the step simulated by a sleep, which frees the CPU like a wait on
the GPU), and the memory each design takes (peak private memory over the start, and the file pages
mapped). The last lines: the disk rate of contiguous chunks (the layout of shuffled chunks) and of
random rows, in MB/s, and what a float16 file would deliver at those rates. Every ratio is against
``before``, measured in the same run. The file is deleted at the end unless ``--keep``.

    python benchmarks/input_pipeline.py [--n 769000] [--path /tmp/alertvision-bench/images.npy]
        [--batch 64] [--workers 1 2] [--seconds 10] [--cache-rows 40000] [--appetite 18000] [--keep]
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from alertvision.training.data import Batches, ReadAhead, gather_then_augment

SHAPE = (3, 63, 63)
PAPER_N = 769_000


def write_images(path: Path, n: int, chunk: int = 4096) -> float:
    """A SYNTHETIC float32 (n, 3, 63, 63) images.npy, written in chunks (never whole in memory); seconds taken."""
    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    block = np.random.default_rng(0).standard_normal((chunk, *SHAPE), dtype=np.float32)
    part = path.with_suffix(".part")
    out = np.lib.format.open_memmap(part, mode="w+", dtype=np.float32, shape=(n, *SHAPE))
    fd = os.open(part, os.O_RDONLY)
    try:
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            out[start:stop] = block[: stop - start] + np.float32(start // chunk)  # every chunk different
            out.flush()
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # written pages leave the cache
    finally:
        os.close(fd)
    del out
    path.with_suffix(".part").rename(path)
    return time.perf_counter() - started


def drop_cache(path: Path, everything: bool) -> None:
    """The file's pages out of the page cache (all of the machine's with ``everything``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    if everything:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def cached_mb(path: Path) -> float:
    """MB of the file in the page cache (fincore), NaN without fincore."""
    try:
        cmd = ["fincore", "-b", "-n", "-o", "RES", str(path)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return int(out.stdout.split()[0]) / 1e6
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return float("nan")


def status_mb(field: str) -> float:
    """A field of /proc/self/status (RssAnon, RssFile), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1e3
    return float("nan")


def before(images: np.ndarray, rows: np.ndarray, batch: int, seed: int) -> Iterator[torch.Tensor]:
    """The epoch's image batches as commit 4ae5bde made them (same draws as :class:`Batches`)."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(rows), generator=generator).numpy()
    for start in range(0, len(rows), batch):
        yield gather_then_augment(images, rows[order[start : start + batch]], generator)


def loader(
    images: np.ndarray, rows: np.ndarray, batch: int, seed: int, workers: int, shuffle: bool = True, hints: bool = True
) -> Iterator:
    """The epoch's batches from the loader with ``workers`` threads (``shuffle=False``: ``rows`` in their
    order; ``hints=False``: without telling the kernel the rows ahead)."""
    labels = np.zeros(len(rows), dtype=np.float32)
    batches = Batches(images, rows, labels, batch, shuffle=shuffle, augment=True, seed=seed, workers=workers)
    if not hints:
        batches.read_ahead = ReadAhead(None)
    return iter(batches)


def measure(epoch: Callable[[], Iterator], batch: int, seconds: float, step_s: float = 0.0) -> dict[str, float]:
    """Alerts/s over at most ``seconds`` of an epoch (each batch followed by a ``step_s`` sleep), alerts per
    CPU second of the process (all its threads: what a loaded machine does not change much), the peak
    private memory growth and the file pages mapped (MB)."""
    anon0 = status_mb("RssAnon")
    peak, n = anon0, 0
    it = epoch()
    started, cpu = time.perf_counter(), time.process_time()
    for i, _ in enumerate(it):
        n += batch
        if step_s:
            time.sleep(step_s)
        if i % 8 == 0:
            peak = max(peak, status_mb("RssAnon"))
        if time.perf_counter() - started > seconds:
            break
    rate, per_cpu_s = n / (time.perf_counter() - started), n / max(time.process_time() - cpu, 1e-9)
    mapped = status_mb("RssFile")
    if hasattr(it, "close"):
        it.close()
    return {"rate": rate, "per_cpu_s": per_cpu_s, "anon": peak - anon0, "mapped": mapped}


def chunk_rows(n: int, chunk: int, count: int, seed: int) -> np.ndarray:
    """Rows of ``count`` contiguous chunks of ``chunk`` rows, the chunks in random order: what reading a
    file stored as shuffled chunks does."""
    starts = np.random.default_rng(seed).permutation(n // chunk)[:count] * chunk
    return (starts[:, None] + np.arange(chunk)).ravel()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=PAPER_N, help="images in the file (default: the paper's 769,000)")
    p.add_argument("--path", type=Path, default=Path("/tmp/alertvision-bench/images.npy"))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    p.add_argument("--cache-rows", type=int, default=40_000, help="rows of the page-cache measurements")
    p.add_argument("--appetite", type=float, default=18_000.0, help="alerts/s of the simulated GPU step (CNN, H100)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    p.add_argument("--drop-caches", action="store_true", help="drop the whole page cache (root) before disk runs")
    p.add_argument("--keep", action="store_true", help="keep the file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    path, batch, seed = args.path, args.batch, 1
    if not path.is_file():
        took = write_images(path, args.n)
        print(f"wrote SYNTHETIC {path}: {args.n} x {SHAPE} float32, {path.stat().st_size / 1e9:.1f} GB in {took:.0f} s")
    images = np.load(path, mmap_mode="r")
    n, row_mb = len(images), images[0].nbytes / 1e6
    size = f"{images.shape} {images.dtype} ({n * row_mb / 1e3:.1f} GB)"
    print(f"SYNTHETIC images {size}, batch {batch}, {os.cpu_count()} CPUs,")
    print(f"  load {os.getloadavg()[0]:.1f}, torch threads {args.threads}, {args.seconds:g} s per measurement")
    Design = Callable[[np.ndarray, np.ndarray], Iterator]
    most = max(args.workers)
    designs: list[tuple[str, Design]] = [
        ("before", lambda im, rows: before(im, rows, batch, seed)),
        *[(f"loader w={w}", lambda im, rows, w=w: loader(im, rows, batch, seed, w)) for w in [0, *args.workers]],
        (f"w={most} no hint", lambda im, rows: loader(im, rows, batch, seed, most, hints=False)),
    ]
    cache_rows = np.arange(min(args.cache_rows, n))
    step_s = batch / args.appetite
    results: dict[tuple[str, str], dict[str, float]] = {}
    assert np.isfinite(images[: len(cache_rows)].sum(dtype=np.float64))  # read once: the rows are in the page cache
    for name, make in designs:
        results[name, "cache"] = measure(partial(make, images, cache_rows), batch, args.seconds)
        results[name, "step"] = measure(partial(make, images, cache_rows), batch, args.seconds, step_s)
    images = None  # unmapped: pages mapped by this process would stay in the cache through DONTNEED

    def from_disk(make: Design, rows: np.ndarray) -> dict[str, float]:
        """A measurement from a cold file, through a new mapping that is let go after it."""
        drop_cache(path, args.drop_caches)
        cold = cached_mb(path)
        epoch = partial(make, np.load(path, mmap_mode="r"), rows)
        result = measure(epoch, batch, args.seconds)
        del epoch
        gc.collect()
        return {**result, "cold": cold}

    all_rows = np.arange(n)
    for name, make in designs:
        results[name, "disk"] = from_disk(make, all_rows)
    dropped = "the whole page cache" if args.drop_caches else "the file's pages (posix_fadvise DONTNEED)"
    colds = [results[name, "disk"]["cold"] for name, _ in designs]
    print(f"dropped before each disk run: {dropped}; then in page cache: {max(colds):.0f} MB at most (fincore)")
    print()
    head = f"{'design':14s} {'cache/s':>9s} {'x':>6s} {'/CPU s':>8s} {'disk/s':>8s} {'x':>6s} {'/CPU s':>8s}"
    print(head + f" {'+step/s':>8s} {'x':>6s} {'anon MB':>8s} {'mapped MB':>10s}")
    base = {k: results["before", k]["rate"] for k in ("cache", "disk", "step")}
    for name, _ in designs:
        c, d, s = (results[name, k] for k in ("cache", "disk", "step"))
        print(
            f"{name:14s} {c['rate']:9.0f} {c['rate'] / base['cache']:6.2f} {c['per_cpu_s']:8.0f}"
            f" {d['rate']:8.0f} {d['rate'] / base['disk']:6.2f} {d['per_cpu_s']:8.0f}"
            f" {s['rate']:8.0f} {s['rate'] / base['step']:6.2f} {max(c['anon'], d['anon']):8.0f} {d['mapped']:10.0f}"
        )
    print(f"(+step: each batch followed by a {step_s * 1e3:.2f} ms sleep, a GPU step at {args.appetite:.0f} alerts/s;")
    print(" /CPU s: alerts per CPU second of the process; anon MB: peak private memory growth;")
    print(" mapped MB: file pages mapped at the end of the disk run, page cache the kernel may reclaim)")
    print()
    chunk, count = 1024, 64 * 256
    layouts = {
        "random rows": np.random.default_rng(2).permutation(n)[:count],
        f"chunks of {chunk}": chunk_rows(n, chunk, max(1, count // chunk), 2),
    }
    for label, rows in layouts.items():
        r = from_disk(lambda im, rows: loader(im, rows, batch, seed, most, shuffle=False), rows)
        mb = r["rate"] * row_mb
        print(
            f"disk, {label:16s} (w={most}): {r['rate']:8.0f} alerts/s, {mb:6.0f} MB/s;"
            f" as float16 at this MB/s: {mb / (row_mb / 2):8.0f} alerts/s"
        )
    if not args.keep:
        path.unlink()
        print(f"deleted {path}")


if __name__ == "__main__":
    main()
