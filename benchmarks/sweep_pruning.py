"""Sweep pruning on the embedded data: the same trials with and without a pruner.

Builds the embedded default's synthetic ZTF dataset and its split in a temporary folder, then runs
two sweeps of one architecture with the same seed: without a pruner (the paper) and with one
(median by default). Prints, for both, the epochs trained, wall time and best validation ROC AUC,
and the ratio of epochs. While the trials are TPE's random start-up trials (the first
``--startup-trials``), both sweeps sample the same parameters trial by trial, so the difference in
best value is whether pruning stopped the best configuration early.

    python benchmarks/sweep_pruning.py [--trials 8] [--arch cnn] [--pruner median] [--intermediate val_loss]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import optuna

from alertvision.config import load_config
from alertvision.data.sources import ingest_ztf
from alertvision.study.jobs import TrainJob, training_params
from alertvision.study.steps import split
from alertvision.sweeps import make_objective, make_pruner, open_study, run_worker, search_space, study_name


def run_sweep(root: Path, data: Path, split_file: Path, config: dict, args: argparse.Namespace, pruner: str) -> dict:
    training = {**training_params(config, args.arch), "threads": args.threads}
    pruner_cfg = {"kind": pruner, "startup_trials": args.pruner_startup, "warmup_epochs": args.pruner_warmup}
    objective = make_objective(
        TrainJob.local(data, split_file, None, model=config["archs"][args.arch], training=training, seed=0),
        space=search_space({}),
        seed=args.seed,
        intermediate=args.intermediate,
        progress=False,
    )
    study = open_study(
        study_name("ztf", "image", args.arch, "none", 100),
        str(root / f"{pruner}.journal"),
        args.seed,
        make_pruner(pruner_cfg, int(training["epochs"])),
        startup_trials=args.startup_trials,
    )
    start = time.perf_counter()
    run_worker(study, objective, args.trials)
    seconds = time.perf_counter() - start
    trials = study.trials
    return {
        "pruner": pruner,
        "epochs": sum(len(t.intermediate_values) for t in trials),
        "seconds": seconds,
        "best": study.best_value,
        "best_trial": study.best_trial.number,
        "max_epochs": int(training["epochs"]),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "values": [round(t.value, 3) if t.state == optuna.trial.TrialState.COMPLETE else "pruned" for t in trials],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--arch", default="cnn")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--pruner", default="median", choices=["median", "hyperband"])
    p.add_argument("--pruner-startup", type=int, default=3, help="median: finished trials before pruning starts")
    p.add_argument("--pruner-warmup", type=int, default=2, help="earliest epoch a trial can be pruned at")
    p.add_argument("--startup-trials", type=int, default=10, help="TPE's random start-up trials")
    p.add_argument(
        "--intermediate",
        default="val_loss",
        choices=["val_loss", "val_roc_auc"],
        help="what each epoch reports to the pruner",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(level=logging.WARNING)
    config = load_config(args.config)
    with tempfile.TemporaryDirectory(prefix="sweep-pruning-") as tmp:
        root = Path(tmp)
        ingest_ztf(config, root / "ztf", progress=False)
        split(root / "ztf", 100, config["splits"], root / "f100.parquet")
        results = [
            run_sweep(root, root / "ztf", root / "f100.parquet", config, args, pruner)
            for pruner in ("none", args.pruner)
        ]
    print(
        f"{args.trials} trials of {args.arch} (at most {results[0]['max_epochs']} epochs each), seed {args.seed}, "
        f"{args.threads} thread(s); {args.pruner} pruner on {args.intermediate} (startup {args.pruner_startup} "
        f"trials, from epoch {args.pruner_warmup})"
    )
    print(f"{'pruner':10s} {'epochs':>6s} {'pruned':>6s} {'wall s':>7s} {'best val AUC':>12s} {'best trial':>10s}")
    for r in results:
        print(
            f"{r['pruner']:10s} {r['epochs']:6d} {r['pruned']:6d} {r['seconds']:7.1f} {r['best']:12.4f} "
            f"{r['best_trial']:10d}"
        )
    for r in results:
        print(f"values ({r['pruner']}): {r['values']}")
    base, pruned = results
    print(
        f"epochs with {args.pruner} / without: {pruned['epochs'] / base['epochs']:.2f}; "
        f"wall time ratio {pruned['seconds'] / base['seconds']:.2f}"
    )


if __name__ == "__main__":
    main()
