"""How long Snakemake takes to plan: ``snakemake -n results/figure2.pdf`` on the embedded default config.

Each tree is copied to a fresh temporary folder (no ``.snakemake``, no results) and planned there
``--repeat`` times; the median and the range are printed, beside two baselines measured in the same run:
Snakemake's own start (``snakemake --version``) and, with ``--baseline REV``, the same dry run on the
revision REV of this repository (``git archive``), e.g. the commit before a change.

    python benchmarks/dry_run.py                        # this working tree and Snakemake's start
    python benchmarks/dry_run.py --baseline ac373d6     # and that revision
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = "results/figure2.pdf"


def _env() -> dict[str, str]:
    """The environment without PYTHONPATH: each tree's Snakefile puts its own src/ first."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def copy_working_tree(dest: Path) -> None:
    """The files git tracks or would track (not ignored), as they are on disk."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def copy_revision(rev: str, dest: Path) -> None:
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    out = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {cwd}:\n{(out.stdout + out.stderr)[-3000:]}")
    return elapsed


def dry_runs(tree: Path, repeat: int) -> list[float]:
    """``repeat`` dry runs, each in a fresh copy of ``tree``."""
    times = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="dry-run-") as tmp:
            work = Path(tmp) / "study"
            shutil.copytree(tree, work)
            times.append(timed([sys.executable, "-m", "snakemake", "-n", "--cores", "1", TARGET], work))
    return times


def show(label: str, times: list[float]) -> None:
    spread = f"min {min(times):.2f}, max {max(times):.2f}, n={len(times)}"
    print(f"{label:<40} median {statistics.median(times):5.2f} s  ({spread})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="REV", help="also plan this revision of the repository")
    parser.add_argument("--repeat", type=int, default=3, help="dry runs per tree (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dry-run-trees-") as tmp:
        trees = {"this working tree": Path(tmp) / "current"}
        trees["this working tree"].mkdir()
        copy_working_tree(trees["this working tree"])
        if args.baseline:
            trees[f"revision {args.baseline}"] = Path(tmp) / "baseline"
            trees[f"revision {args.baseline}"].mkdir()
            copy_revision(args.baseline, trees[f"revision {args.baseline}"])
        start = [timed([sys.executable, "-m", "snakemake", "--version"], Path(tmp)) for _ in range(args.repeat)]
        print(f"snakemake -n {TARGET}, embedded default config, fresh folder each time")
        show("snakemake's own start (--version)", start)
        # interleaved, so that a busy machine slows every tree alike
        results: dict[str, list[float]] = {label: [] for label in trees}
        for _ in range(args.repeat):
            for label, tree in trees.items():
                results[label] += dry_runs(tree, 1)
        for label, times in results.items():
            show(label, times)


if __name__ == "__main__":
    main()
