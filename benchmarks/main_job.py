"""Time README's main command from a fresh clone, and where its time goes.

    python benchmarks/main_job.py                      # HEAD, snakemake --cores 2 results/figure2.pdf
    python benchmarks/main_job.py --rev 192890e --rev HEAD   # before / after, in one sitting

For each revision: `git clone` of this repository at that revision into a temporary folder (its
embedded default config, no results), then README's main command there with this environment's
Python (the install is not timed), the clone's own `src/` first on PYTHONPATH so that its jobs run
the revision's library, not the one this environment has installed. Prints the wall time, the
ratio of each revision's wall time to the first one's, and per rule: jobs, summed job seconds, the
longest job, from Snakemake's own log (job start to "Finished jobid"). Nothing is kept unless --keep.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
RULE = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def job_times(log: str) -> dict[str, list[float]]:
    """Seconds of each finished job, by rule, from a Snakemake log."""
    started: dict[str, datetime] = {}
    out: dict[str, list[float]] = defaultdict(list)
    stamp, rule = None, None
    for line in log.splitlines():
        if m := STAMP.match(line):
            stamp, rule = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y"), None
        elif (m := RULE.match(line)) and stamp is not None:
            rule = m.group(1)
        elif (m := JOBID.match(line)) and rule is not None and stamp is not None:
            started[m.group(1)] = stamp
        elif (m := FINISHED.match(line)) and stamp is not None and m.group(1) in started:
            out[m.group(2)].append((stamp - started.pop(m.group(1))).total_seconds())
    return out


def time_revision(rev: str, cores: int, target: str, keep: bool) -> tuple[float, dict[str, list[float]], Path]:
    work = Path(tempfile.mkdtemp(prefix=f"main-job-{rev[:12]}-"))
    clone = work / "alertvision"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", rev], check=True)
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), target]
    print(f"{rev}: {' '.join(cmd[2:])} in {clone}", flush=True)
    path = [str(clone / "src"), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    start = time.monotonic()
    run = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    if run.returncode != 0:
        raise SystemExit(f"{rev}: the main command failed ({run.returncode}):\n{run.stderr[-3000:]}")
    logs = sorted((clone / ".snakemake" / "log").glob("*.snakemake.log"))
    times = job_times(logs[-1].read_text()) if logs else {}
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return wall, times, clone


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", action="append", help="git revision to time (repeat; default HEAD)")
    p.add_argument("--cores", type=int, default=2, help="snakemake --cores (default: %(default)s)")
    p.add_argument("--target", default="results/figure2.pdf", help="(default: %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the clones and their results")
    args = p.parse_args()
    revs = args.rev or ["HEAD"]
    results = [(rev, *time_revision(rev, args.cores, args.target, args.keep)) for rev in revs]
    base = results[0][1]
    for rev, wall, times, clone in results:
        jobs = sum(len(v) for v in times.values())
        print(f"\n{rev}: {wall:.0f} s wall ({wall / 60:.1f} min), {jobs} jobs, ratio to {revs[0]}: {wall / base:.2f}")
        print(f"{'rule':<22}{'jobs':>6}{'job s':>10}{'longest':>10}")
        for rule, secs in sorted(times.items(), key=lambda kv: -sum(kv[1])):
            print(f"{rule:<22}{len(secs):>6}{sum(secs):>10.0f}{max(secs):>10.0f}")
        if args.keep:
            print(f"kept: {clone}")


if __name__ == "__main__":
    main()
