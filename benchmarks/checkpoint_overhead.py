"""What checkpointing costs a training run: seconds per epoch with checkpoints on and off, and the time
spent writing them, for each architecture of a config, on a dataset the pipeline made.

    snakemake --cores 2 results/splits/ztf/f100.parquet      # once: the embedded default's dataset
    python benchmarks/checkpoint_overhead.py [--epochs 2] [--archs cnn convnext maxvit]

Both runs of an architecture train the same epochs on the same data in this process, one after the
other (off, on); the ratio is on / off. Prints one line per architecture.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from alertvision.config import load_config  # noqa: E402
from alertvision.study.jobs import (  # noqa: E402
    TrainJob,  # noqa: E402
    model_spec,
    training_params,
)
from alertvision.study.plan import Layout  # noqa: E402
from alertvision.training.checkpoint import Checkpointer  # noqa: E402
from alertvision.training.loop import train_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    parser.add_argument("--results", default="results", help="the results folder the dataset and split are in")
    parser.add_argument("--dataset", default="ztf")
    parser.add_argument("--fraction", default="100")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--archs", nargs="+", default=["cnn", "convnext", "maxvit"])
    args = parser.parse_args()
    config = load_config(args.config)
    layout = Layout(results=args.results)
    dataset, split = layout.dataset_dir(args.dataset), layout.split_file(args.dataset, args.fraction)
    if not Path(split).is_file():
        sys.exit(f"{split} is missing: run `snakemake --cores 2 {split}` first")

    writes: list[float] = []
    save = Checkpointer.save

    def timed_save(self, state):
        started = time.perf_counter()
        save(self, state)
        writes.append(time.perf_counter() - started)

    Checkpointer.save = timed_save
    print(f"{'arch':10s} {'off s/epoch':>12s} {'on s/epoch':>11s} {'ratio':>6s} {'write s':>8s} {'file MB':>8s}")
    for arch in args.archs:
        training = {**training_params(config, arch), "epochs": args.epochs, "patience": args.epochs + 1}
        per_epoch = {}
        size = 0.0
        for on in (False, True):
            writes.clear()
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                train_run(
                    TrainJob.local(
                        dataset, split, tmp, model=model_spec(config, arch, "image"), training=training, seed=0
                    ),
                    progress=False,
                    checkpoint=on,
                    keep_checkpoint=True,
                )
                per_epoch[on] = (time.perf_counter() - started) / args.epochs
                if on:
                    size = (Path(tmp) / ".checkpoint.pt").stat().st_size / 1e6
        write = sum(writes) / max(len(writes), 1)
        print(
            f"{arch:10s} {per_epoch[False]:12.2f} {per_epoch[True]:11.2f} "
            f"{per_epoch[True] / per_epoch[False]:6.3f} {write:8.3f} {size:8.1f}"
        )


if __name__ == "__main__":
    main()
