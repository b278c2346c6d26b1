"""Legacy Survey cutout fetching against a local cutout service with injected latency, in one run.

Starts the local stand-in of the viewer's cutout service (tests/servers/legacysurvey_server.py, real FITS
layout) with ``--latency`` seconds per answer, fetches ``--n`` sources with 1 request in flight
(the baseline) and with ``--concurrency`` in flight into fresh caches, prints sources/s of each and
their ratio, then fetches again into the filled cache and prints the cache hit rate. No network.

    python benchmarks/ls_fetch.py [--n 2000] [--latency 0.05] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "servers"))

from legacysurvey_server import ViewerServer  # noqa: E402

from alertvision.data.legacysurvey_fetch import ViewerFetcher  # noqa: E402


def sources(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` random positions in the northern sky, as (objectId, ra, dec)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "objectId": [f"ZTF25bench{i:05d}" for i in range(n)],
            "ra": rng.uniform(0, 360, n),
            "dec": rng.uniform(-20, 80, n),
        }
    )


def fetch(url: str, cache: Path, srcs: pd.DataFrame, concurrency: int) -> tuple[float, dict]:
    cfg = {
        "url": url,
        "layer": "ls-dr10",
        "cache_dir": str(cache),
        "concurrency": concurrency,
        "rate_per_s": 1e6,
        "timeout_s": 30.0,
        "retries": 2,
        "backoff_s": 0.0,
        "max_failed_fraction": 0.0,
    }
    fetcher = ViewerFetcher(cfg)
    start = time.perf_counter()
    report = fetcher.fetch_all(srcs, progress=False)
    elapsed = time.perf_counter() - start
    fetcher.close()
    return elapsed, dict(report.counts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="sources (default %(default)s)")
    p.add_argument("--latency", type=float, default=0.05, help="seconds added to every answer (default %(default)s)")
    p.add_argument(
        "--concurrency", type=int, default=8, help="requests in flight to compare with 1 (default %(default)s)"
    )
    args = p.parse_args()
    srcs = sources(args.n)
    with ViewerServer(latency_s=args.latency) as server, tempfile.TemporaryDirectory() as tmp:
        t1, c1 = fetch(server.url, Path(tmp) / "one", srcs, 1)
        print(f"1 in flight:  {args.n / t1:7.1f} sources/s ({t1:.1f} s, {c1})")
        tk, ck = fetch(server.url, Path(tmp) / "many", srcs, args.concurrency)
        print(f"{args.concurrency} in flight: {args.n / tk:7.1f} sources/s ({tk:.1f} s, {ck})")
        print(f"ratio {args.concurrency} in flight / 1 in flight: {t1 / tk:.2f}x")
        asked = sum(server.counts.values())
        t2, c2 = fetch(server.url, Path(tmp) / "many", srcs, args.concurrency)
        hits = c2.get("cached", 0) / args.n
        print(
            f"second run: cache hit rate {hits:.1%}, {sum(server.counts.values()) - asked} requests, "
            f"{args.n / t2:.0f} sources/s ({t2:.1f} s)"
        )


if __name__ == "__main__":
    main()
