"""Speed of ZTF stamp decoding: the astropy path against the fast reader, on the real stamps.

Reads the 36 stamps (3 per packet) of the twelve real ZTF packets in tests/data/ztf_alerts, repeats
them to --stamps stamps, checks that both paths give the same arrays bit for bit, then in one run,
single-threaded, alternating the two paths --rounds times and keeping each one's best round, times:

- astropy path: ``gzip.decompress`` then ``astropy.io.fits`` (``decode_stamp`` before the fast reader);
- fast path: ``decode_stamp`` as it is now (one zlib call, then ``fitsstamp.read_primary_image``).

Prints stamps/s of each, alerts/s (3 stamps an alert) and their ratio; also the gunzip alone (the
fast path's ``_gunzip``), the floor of the fast path.

    python benchmarks/stamp_decode.py [--stamps 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path
from typing import Callable

import fastavro
import numpy as np

from alertvision.data.triplet import CUTOUT_FIELDS, _decode_with_astropy, _gunzip, decode_stamp

ALERTS_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "ztf_alerts"


def real_stamps() -> list[bytes]:
    """The gzipped FITS stamps of the real packets, science/template/difference of each."""
    stamps = []
    for path in sorted(ALERTS_DIR.glob("*.avro")):
        with open(path, "rb") as fh:
            for packet in fastavro.reader(fh):
                stamps.extend(packet[field]["stampData"] for field in CUTOUT_FIELDS)
    if not stamps:
        raise SystemExit(f"no packets in {ALERTS_DIR}")
    return stamps


def astropy_path(stamp: bytes) -> np.ndarray:
    """decode_stamp before the fast reader: gzip.decompress, then astropy."""
    return _decode_with_astropy(gzip.decompress(stamp))


def run_time(decode: Callable[[bytes], np.ndarray], stamps: list[bytes]) -> float:
    """Seconds to decode every stamp once."""
    started = time.perf_counter()
    for stamp in stamps:
        decode(stamp)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stamps", type=int, default=3000, help="stamps decoded per round (real ones, repeated)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per path, alternating; the best one counts")
    args = parser.parse_args()

    unique = real_stamps()
    for stamp in unique:
        fast, slow = decode_stamp(stamp), astropy_path(stamp)
        if fast.shape != slow.shape or not np.array_equal(fast.view(np.uint32), slow.view(np.uint32)):
            raise SystemExit("the fast path's array differs from astropy's")
    stamps = (unique * (args.stamps // len(unique) + 1))[: args.stamps]
    print(f"{len(stamps):,} stamps ({len(unique)} real ones repeated), best of {args.rounds} rounds, one thread")

    t_astropy = t_fast = t_gunzip = float("inf")
    for _ in range(args.rounds):
        t_astropy = min(t_astropy, run_time(astropy_path, stamps))
        t_fast = min(t_fast, run_time(decode_stamp, stamps))
        t_gunzip = min(t_gunzip, run_time(_gunzip, stamps))
    n = len(stamps)
    print(f"astropy path (gzip + astropy.io.fits): {n / t_astropy:10,.0f} stamps/s {n / t_astropy / 3:9,.0f} alerts/s")
    print(f"fast path (decode_stamp):              {n / t_fast:10,.0f} stamps/s {n / t_fast / 3:9,.0f} alerts/s")
    print(f"gunzip alone (zlib):                   {n / t_gunzip:10,.0f} stamps/s")
    print(f"ratio (astropy time / fast time): {t_astropy / t_fast:.1f}x")


if __name__ == "__main__":
    main()
