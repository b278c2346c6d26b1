"""Speed of the trigger-policy scoring (``policies.evaluate_policies``) against a per-source loop.

Builds a SYNTHETIC predictions table (random scores and magnitudes, 1-20 alerts per source, rows
shuffled), then in one run times:

- baseline: a plain loop over sources (``groupby``, sort by jd, ``trigger_index`` per source), the
  obvious way to write it, on the first ``--baseline-sources`` sources;
- ``evaluate_policies`` (all four policies) on the same sources, and on the whole table.

Checks that both give the same trigger decisions, then prints alerts/s of each and their ratio.

    python benchmarks/trigger_policies.py [--sources 100000] [--baseline-sources 5000] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from alertvision.evaluation.policies import POLICIES, evaluate_policies, source_decisions, trigger_index


def predictions(n_sources: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_alerts = rng.integers(1, 21, n_sources)
    source = np.repeat(np.arange(n_sources), n_alerts)
    frame = pd.DataFrame(
        {
            "objectId": np.char.add("SYN", source.astype(str)),
            "jd": 2459000.5 + rng.uniform(0, 100, len(source)),
            "label": np.repeat(rng.integers(0, 2, n_sources), n_alerts),
            "score": rng.uniform(0, 1, len(source)),
            "magpsf": rng.uniform(16.5, 20.5, len(source)),
        }
    )
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def loop_triggers(frame: pd.DataFrame) -> dict[str, dict[str, bool]]:
    """Per policy, per source, whether it triggers: one source at a time."""
    out: dict[str, dict[str, bool]] = {name: {} for name in POLICIES}
    for object_id, alerts in frame.groupby("objectId"):
        alerts = alerts.sort_values("jd", kind="stable")
        scores, mags = alerts["score"].to_numpy(), alerts["magpsf"].to_numpy()
        for name, policy in POLICIES.items():
            out[name][object_id] = trigger_index(scores, mags, policy) is not None
    return out


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=100_000)
    parser.add_argument("--baseline-sources", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    frame = predictions(args.sources, args.seed)
    subset_ids = frame["objectId"].drop_duplicates().iloc[: args.baseline_sources]
    subset = frame[frame["objectId"].isin(subset_ids)]
    print(
        f"SYNTHETIC predictions: {len(frame):,} alerts of {args.sources:,} sources; baseline subset "
        f"{len(subset):,} alerts of {len(subset_ids):,} sources"
    )

    loop, t_loop = timed(loop_triggers, subset)
    _, t_fast = timed(evaluate_policies, subset)
    for name in POLICIES:
        decided = source_decisions(subset, name).set_index("objectId")["triggered"].to_dict()
        if decided != loop[name]:
            raise SystemExit(f"{name}: the vectorised decisions differ from the loop's")
    _, t_all = timed(evaluate_policies, frame)
    print(f"per-source loop (4 policies):     {len(subset) / t_loop:12,.0f} alerts/s ({t_loop:.2f} s)")
    print(f"evaluate_policies, same subset:   {len(subset) / t_fast:12,.0f} alerts/s ({t_fast:.2f} s)")
    print(f"evaluate_policies, whole table:   {len(frame) / t_all:12,.0f} alerts/s ({t_all:.2f} s)")
    print(f"ratio (loop time / evaluate_policies time, same subset): {t_loop / t_fast:.1f}x")


if __name__ == "__main__":
    main()
