"""Import speed and peak memory of the BTSbot release ingester, against a plain read of the same bytes.

Builds a release-format folder of N SYNTHETIC alerts (random triplets normalised per cutout, made-up
candidate rows with the release's columns: no real data is needed or used), then, in one run:

- baseline: a plain sequential read of the triplet files' bytes (from disk: the page cache of the
  files is dropped first where the OS allows);
- the import (``ingest_release``) in a child process, so the generator's memory does not count.

Prints the import's alerts/s, its peak resident memory, and the ratio import time / raw read time.

    python benchmarks/release_import.py [--n 200000] [--chunk 2048] [--workdir DIR] [--keep] [--zip]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from alertvision.data.ingest.release import CANDIDATE_HEADER, RELEASE_COLUMNS

TAG = "v10_N100_programid1"
SPLIT_SHARES = {"train": 0.81, "val": 0.09, "test": 0.10}
#: The release's candidate-table header, then the columns the release adds.
COLUMNS = CANDIDATE_HEADER + RELEASE_COLUMNS
TRIPLET = (63, 63, 3)
ALERTS_PER_SOURCE = 20
GEN_CHUNK = 2048


# ---------------------------------------------------------------------------------------------- generating


def split_sizes(n: int) -> dict[str, int]:
    """Alerts per split, ~81 / 9 / 10 %, summing to n."""
    sizes = {s: int(n * share) for s, share in SPLIT_SHARES.items()}
    sizes["train"] += n - sum(sizes.values())
    return sizes


def synthetic_candidates(split: str, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """A SYNTHETIC candidate table in the release's format (values are random, not observations)."""
    df = pd.DataFrame({c: rng.normal(size=n).astype(np.float32) for c in COLUMNS})
    idx = np.arange(n)
    df["objectId"] = [f"SYNTH{split[:2]}{i // ALERTS_PER_SOURCE:07d}" for i in idx]
    df["jd"] = 2459000.5 + (idx % ALERTS_PER_SOURCE) * 0.7 + rng.uniform(0, 0.1, n)
    df["fid"] = rng.integers(1, 3, n)
    df["label"] = (rng.uniform(size=n) < 0.4).astype(int)
    df["candid"] = [float(f"{x:.5e}") for x in rng.integers(2 * 10**18, 29 * 10**17, n)]
    df["isdiffpos"] = "t"
    df["programid"] = 1
    df["source_set"] = "synthetic"
    df["split"] = split
    df["is_SN"] = rng.uniform(size=n) < 0.3
    return df


def synthetic_triplets(n: int, rng: np.random.Generator) -> np.ndarray:
    """SYNTHETIC float64 NHWC triplets, each cutout normalised to unit norm like the release's."""
    block = rng.standard_normal((n, *TRIPLET), dtype=np.float32).astype(np.float64)
    block /= np.linalg.norm(block, axis=(1, 2), keepdims=True)
    return block


def write_npy_file(path: Path, n: int, rng: np.random.Generator) -> None:
    """Write n triplets to an .npy through numpy's open_memmap, one chunk mapped at a time."""
    np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n, *TRIPLET)).flush()
    for start in range(0, n, GEN_CHUNK):
        stop = min(n, start + GEN_CHUNK)
        window = np.lib.format.open_memmap(path, mode="r+")
        window[start:stop] = synthetic_triplets(stop - start, rng)
        window.flush()
        del window  # unmapped: the generator's memory stays one chunk
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def write_npy_member(zf: zipfile.ZipFile, name: str, n: int, rng: np.random.Generator) -> None:
    """Stream n triplets into a (deflated) zip member, header first, chunk by chunk."""
    with zf.open(name, "w", force_zip64=True) as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": (n, *TRIPLET)})
        for start in range(0, n, GEN_CHUNK):
            fh.write(synthetic_triplets(min(GEN_CHUNK, n - start), rng).tobytes())


def build_release(folder: Path, n: int, zipped: bool, seed: int = 0) -> list[Path]:
    """Write a SYNTHETIC release of n alerts to ``folder``; returns the files holding the triplets."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "SYNTHETIC_DATA.txt").write_text(
        "Synthetic benchmark data in the BTSbot release format: random values, not observations.\n"
    )
    rng = np.random.default_rng(seed)
    sizes = split_sizes(n)
    tables = {s: synthetic_candidates(s, k, rng) for s, k in sizes.items()}
    if not zipped:
        for split, k in sizes.items():
            tables[split].to_csv(folder / f"{split}_cand_{TAG}.csv", index=False)
            write_npy_file(folder / f"{split}_triplets_{TAG}.npy", k, rng)
        return [folder / f"{s}_triplets_{TAG}.npy" for s in sizes]
    with zipfile.ZipFile(folder / "metadata_v10.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for split, df in tables.items():
            zf.writestr(f"{split}_cand_{TAG}.csv", df.to_csv(index=False))
    with zipfile.ZipFile(folder / "images_v10.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for split, k in sizes.items():
            write_npy_member(zf, f"{split}_triplets_{TAG}.npy", k, rng)
    return [folder / "images_v10.zip"]


# ---------------------------------------------------------------------------------------------- measuring


def drop_page_cache(paths: list[Path]) -> bool:
    """Evict the files' pages from the page cache (no root needed); False where the OS cannot."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def raw_read_seconds(folder: Path, zipped: bool, block_bytes: int) -> tuple[float, int]:
    """Time a plain sequential read of the triplet bytes (zip members decompressed); returns (s, bytes)."""
    buf = bytearray(block_bytes)
    total = 0
    start = time.perf_counter()
    if zipped:
        with zipfile.ZipFile(folder / "images_v10.zip") as zf:
            for name in zf.namelist():
                with zf.open(name) as fh:
                    while chunk := fh.read(block_bytes):
                        total += len(chunk)
    else:
        for path in sorted(folder.glob("*.npy")):
            with open(path, "rb", buffering=0) as fh:
                while k := fh.readinto(buf):
                    total += k
    return time.perf_counter() - start, total


def peak_rss_kib() -> int:
    """This process's peak resident set: VmHWM where /proc has it (ru_maxrss keeps a parent's peak over exec)."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_import(folder: str, out: str, chunk: int) -> None:
    """Run in the child process: import the release, print timing and peak memory as JSON."""
    from alertvision.config import validate_config
    from alertvision.data.ingest.release import ingest_release

    config = validate_config(
        {
            "data": {"source": "release", "release": {"path": folder, "chunk_alerts": chunk}},
            "grid": {"datasets": ["ztf"]},
        }
    )
    before = peak_rss_kib()
    start = time.perf_counter()
    manifest = ingest_release(config, out, progress=False)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
                "n_alerts": manifest["n_alerts"],
                "peak_rss_kib": peak_rss_kib(),
                "peak_rss_kib_before_import": before,
            }
        )
    )


def run_import(folder: Path, out: Path, chunk: int) -> tuple[dict, float]:
    """Import in a child process; returns its report and its wall time."""
    start = time.perf_counter()
    res = subprocess.run(
        [sys.executable, __file__, "--child", str(folder), str(out), str(chunk)],
        check=False,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if res.returncode:
        sys.exit(f"import failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1]), wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000, help="synthetic alerts in the release (default 200000)")
    p.add_argument("--chunk", type=int, default=2048, help="data.release.chunk_alerts of the import (default 2048)")
    p.add_argument("--workdir", type=Path, default=None, help="where to build the release (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the generated release and the imported dataset")
    p.add_argument(
        "--zip",
        action="store_true",
        help="pack the release as images_v10.zip / metadata_v10.zip (deflated) instead of extracted files",
    )
    p.add_argument("--child", nargs=3, metavar=("FOLDER", "OUT", "CHUNK"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child_import(args.child[0], args.child[1], int(args.child[2]))
        return
    root = Path(tempfile.mkdtemp(prefix="release_bench_", dir=args.workdir))
    try:
        bench(root, args)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def bench(root: Path, args: argparse.Namespace) -> None:
    folder, out = root / "release", root / "out"
    t0 = time.perf_counter()
    inputs = build_release(folder, args.n, args.zip)
    in_bytes = sum(f.stat().st_size for f in inputs)
    print(
        f"SYNTHETIC release: {args.n} alerts {split_sizes(args.n)}, {'zipped' if args.zip else 'extracted'}, "
        f"{in_bytes / 1e9:.2f} GB of triplet files, built in {time.perf_counter() - t0:.0f} s in {folder}"
    )
    cold = drop_page_cache(inputs)
    raw_s, raw_bytes = raw_read_seconds(folder, args.zip, args.chunk * int(np.prod(TRIPLET)) * 8)
    print(
        f"baseline: plain sequential read of {raw_bytes / 1e9:.2f} GB: {raw_s:.1f} s "
        f"({raw_bytes / 1e9 / raw_s:.2f} GB/s){'' if cold else ' (page cache not dropped)'}"
    )
    drop_page_cache(inputs)
    report, wall = run_import(folder, out, args.chunk)
    out_bytes = (out / "images.npy").stat().st_size
    children_maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        f"import (chunk_alerts {args.chunk}): {report['seconds']:.1f} s, "
        f"{report['n_alerts'] / report['seconds']:.0f} alerts/s (child wall time {wall:.1f} s); "
        f"images.npy {out_bytes / 1e9:.2f} GB"
    )
    print(
        f"import peak RSS: {report['peak_rss_kib'] / 1024:.0f} MB (child VmHWM; "
        f"{report['peak_rss_kib_before_import'] / 1024:.0f} MB after its imports, before the import); "
        f"RUSAGE_CHILDREN ru_maxrss {children_maxrss / 1024:.0f} MB (Linux carries the parent's peak into it)"
    )
    print(f"ratio import_time / raw_read_time: {report['seconds'] / raw_s:.2f}")
    print(f"total wall time {time.perf_counter() - (t0):.0f} s")


if __name__ == "__main__":
    main()
