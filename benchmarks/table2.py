"""Table 2 without training: paper protocol vs production mode for every architecture, CPU and CUDA.

Random weights and random L2-normalised cutouts (read from a memory-mapped .npy, as the pipeline
reads a dataset): throughput and memory do not depend on them. Prints the table, the
production/paper ratio per architecture and device, and the study's compute estimate from short
training bursts; writes table2.csv, table2.md, table2_runs.json and table2.log to ``--out``.
Reading no config and no dataset, the estimate uses an explicit ASSUMED workload (the paper's grid,
162,000 training alerts at 100%, --epochs / --patience / --sweep-trials), printed as such; the
pipeline's table2.md reads its workload from the config instead.

Needs only python3 with torch, timm, numpy and pandas (onnxruntime + onnx optional: without them
the CPU candidates are PyTorch only). alertvision is imported from the src/ beside this folder.

    python3 benchmarks/table2.py --out OUT              # CPU, and CUDA (MaxViT at 224 px there) when present
    python3 benchmarks/table2.py --quick --out OUT      # shorter trials
    python3 benchmarks/table2.py --devices cuda --gpu-input-size none --out OUT   # CUDA at the config's sizes
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from alertvision.models import build_model  # noqa: E402
from alertvision.reports import table2 as tp  # noqa: E402
from alertvision.reports.table2.estimate import StudyWorkload, format_estimate, study_hours  # noqa: E402
from alertvision.reports.workload import workload_groups  # noqa: E402

log = logging.getLogger("table2")

#: The architectures of config/config.yaml with the schema's defaults filled in (kept in step by
#: tests/unit/test_throughput.py), so that this script needs neither yaml nor jsonschema.
ARCHS = {
    "cnn": {
        "kind": "cnn",
        "input_size": 63,
        "input_scale": 63.0,
        "conv1_channels": 32,
        "conv2_channels": 64,
        "conv_kernel": 5,
        "conv_dropout1": 0.50,
        "conv_dropout2": 0.55,
    },
    "convnext": {"kind": "timm", "timm_name": "convnext_pico", "input_size": 63, "input_scale": 63.0},
    "maxvit": {"kind": "timm", "timm_name": "maxvit_tiny_rw_224", "input_size": 64, "input_scale": 63.0},
}
#: The head of each architecture (BTSbot's one-layer head for the CNN, the training block's for the
#: others) and the training batch size per architecture.
HEADS = {
    "cnn": {"dense1": 8, "dense2": None, "dropout": 0.2},
    "convnext": {"dense1": 128, "dense2": 16, "dropout": 0.5},
    "maxvit": {"dense1": 128, "dense2": 16, "dropout": 0.5},
}
TRAIN_BATCH = {"cnn": 32, "convnext": 64, "maxvit": 64}

#: The ASSUMED workload of the compute estimate (no config is read): the paper's grid. Image models on
#: ZTF and ZTF + Legacy Survey, multi-modal models on ZTF; the CNN from random init, ConvNeXt and
#: MaxViT from three regimens; four fractions, five seeds; 162,000 training alerts at 100% (our guess
#: at the BTSbot v10 train split after the cap of 100 alerts per source; fractions scale it).
ASSUMED_TRAIN_ALERTS = 162_000
ASSUMED_FRACTIONS = (5, 10, 50, 100)
ASSUMED_SEEDS = range(5)
ASSUMED_DATASETS = {"image": ("ztf", "ls"), "multimodal": ("ztf",)}
ASSUMED_REGIMENS = {
    "cnn": ("none",),
    "convnext": ("none", "imagenet", "galaxyzoo"),
    "maxvit": ("none", "imagenet", "galaxyzoo"),
}


def count_or_none(text: str) -> int | None:
    """'none' -> None, else a positive integer."""
    if text.lower() == "none":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'none', got {text!r}")
    return value


def assumed_workload(args: argparse.Namespace, archs: list[str]) -> StudyWorkload:
    """The ASSUMED workload of the estimate: every run of the paper's grid for ``archs``, one sweep study
    of ``--sweep-trials`` trials per (dataset, modality, arch, regimen, fraction) but Figure 3's multi-modal
    CNN, BTSbot's production model (``multimodal.cnn_baseline: production``), which is not swept."""
    cells = (
        {
            "arch": arch,
            "modality": modality,
            "dataset": dataset,
            "regimen": regimen,
            "fraction": fraction,
            "seed": seed,
            "epochs": args.epochs,
            "patience": args.patience,
            "sweep_trials": 0 if (arch == "cnn" and modality == "multimodal") else args.sweep_trials,
        }
        for arch in archs
        for modality, datasets in ASSUMED_DATASETS.items()
        for dataset in datasets
        for regimen in ASSUMED_REGIMENS[arch]
        for fraction in ASSUMED_FRACTIONS
        for seed in ASSUMED_SEEDS
    )
    counts = {f: round(ASSUMED_TRAIN_ALERTS * f / 100) for f in ASSUMED_FRACTIONS}
    return StudyWorkload.from_plan(
        workload_groups(cells),
        counts,
        f"an ASSUMPTION of benchmarks/table2.py ({ASSUMED_TRAIN_ALERTS:,} at 100%, "
        "scaled by the fraction; no dataset was read)",
    )


def parse_sizes(items: list[str]) -> dict[str, int]:
    """['maxvit=224'] -> {'maxvit': 224}."""
    out = {}
    for item in items:
        arch, sep, size = item.partition("=")
        if not sep or arch not in ARCHS:
            raise SystemExit(f"expected ARCH=SIZE with ARCH one of {', '.join(ARCHS)}, got {item!r}")
        out[arch] = int(size)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="folder for table2.csv, table2.md, table2_runs.json, table2.log")
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    p.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], help="default: cpu, and cuda when present")
    p.add_argument(
        "--input-size",
        action="append",
        default=[],
        metavar="ARCH=SIZE",
        help="input size on every device (default: config/config.yaml's)",
    )
    p.add_argument(
        "--gpu-input-size",
        action="append",
        default=None,
        metavar="ARCH=SIZE",
        help="input size on CUDA (default: maxvit=224, the paper's; 'none' for --input-size's)",
    )
    p.add_argument("--cpu-threads", type=int, default=2)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument(
        "--min-alerts",
        type=count_or_none,
        default=1024,
        help="alerts per trial on the CPU ('none': the 2048 cutouts once per trial)",
    )
    p.add_argument(
        "--gpu-min-alerts",
        type=count_or_none,
        default=8192,
        help="alerts per trial on CUDA ('none': the 2048 cutouts once per trial)",
    )
    p.add_argument("--cpu-batch", type=int, default=256)
    p.add_argument("--gpu-batch", type=int, default=1024)
    p.add_argument("--tolerance", type=float, default=1e-3)
    p.add_argument("--no-compile", action="store_true", help="no torch.compile on CUDA")
    p.add_argument(
        "--compile-budget",
        type=float,
        default=240.0,
        help="seconds into the run after which torch.compile is no longer tried",
    )
    p.add_argument(
        "--deadline", type=float, default=360.0, help="seconds into the run after which no further case is started"
    )
    p.add_argument("--no-train", action="store_true", help="skip the training bursts and the compute estimate")
    p.add_argument("--epochs", type=int, default=1000, help="assumed maximum epochs per run and sweep trial")
    p.add_argument("--patience", type=int, default=75, help="assumed early-stopping patience (reported only)")
    p.add_argument("--sweep-trials", type=int, default=50, help="assumed trials per sweep study (0: no sweeps)")
    p.add_argument("--quick", action="store_true", help="2 trials of 256 CPU / 4096 CUDA alerts, 2 training steps")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> tp.BenchSettings:
    s = tp.BenchSettings(
        trials=args.trials,
        min_alerts=args.min_alerts,
        gpu_min_alerts=args.gpu_min_alerts,
        cpu_threads=args.cpu_threads,
        cpu_batch_size=args.cpu_batch,
        gpu_batch_size=args.gpu_batch,
        compile=not args.no_compile,
        tolerance=args.tolerance,
    )
    if args.quick:
        s = replace(
            s,
            trials=min(s.trials, 2),
            min_alerts=min(s.min_alerts or 256, 256),
            gpu_min_alerts=min(s.gpu_min_alerts or 4096, 4096),
            train_steps=2,
            train_warmup=1,
        )
    return s


def cases(args: argparse.Namespace, devices: list[torch.device]) -> list[tuple[str, int, torch.device]]:
    """(arch, input size, device) to measure: CUDA first (it has the compile budget), then CPU."""
    sizes = parse_sizes(args.input_size)
    gpu_items = args.gpu_input_size if args.gpu_input_size is not None else ["maxvit=224"]
    gpu_sizes = {**sizes, **parse_sizes([i for i in gpu_items if i != "none"])}
    out = []
    for device in sorted(devices, key=lambda d: d.type != "cuda"):
        chosen = gpu_sizes if device.type == "cuda" else sizes
        out += [(arch, chosen.get(arch, ARCHS[arch]["input_size"]), device) for arch in args.archs]
    return out


def memmapped_inputs(folder: Path, n: int = 2048) -> tp.AlertInputs:
    """Random cutouts written to ``folder/images.npy`` and opened memory-mapped."""
    data = tp.random_inputs(n)
    np.save(folder / "images.npy", data.images)
    images = np.load(folder / "images.npy", mmap_mode="r")
    return replace(data, images=images, source=f"{n} random cutouts (memory-mapped)")


def setup_logging(out: Path | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(out / "table2.log", mode="w"))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True
    )


def ratios(rows: list[tp.Row]) -> list[str]:
    """'arch size device: production/paper' lines."""
    lines = []
    for r in rows:
        if r.mode == tp.PRODUCTION:
            lines.append(
                f"{r.arch} at {r.input_size} px on {r.device} ({r.threads} threads): "
                f"production / paper = {r.speedup:.2f}x ({r.setup})"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.out)
    settings = settings_from(args)
    devices = [torch.device(d) for d in args.devices] if args.devices else tp.available_devices()
    if any(d.type == "cuda" for d in devices) and not torch.cuda.is_available():
        raise SystemExit("--devices cuda: no CUDA device is available")
    train_on = tp.train_device() if any(d.type == "cuda" for d in devices) else torch.device("cpu")
    log.info("torch %s, onnxruntime %s, settings %s", torch.__version__, tp._ort_version(), asdict(settings))
    started = time.perf_counter()
    rows: list[tp.Row] = []
    candidates: list[dict] = []
    training: list[dict] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs = memmapped_inputs(Path(tmp))
        for arch, size, device in cases(args, devices):
            elapsed = time.perf_counter() - started
            if elapsed > args.deadline:
                log.warning(
                    "%.0f s in (--deadline %.0f): %s at %d px on %s skipped",
                    elapsed,
                    args.deadline,
                    arch,
                    size,
                    device.type,
                )
                skipped.append(f"{arch} at {size} px on {device.type}")
                continue
            cfg = tp.with_input_size(ARCHS[arch], size)
            run = settings
            if settings.compile and device.type == "cuda" and elapsed > args.compile_budget:
                log.warning("%.0f s in: no torch.compile for %s at %d px", elapsed, arch, size)
                run = replace(settings, compile=False)
            torch.manual_seed(0)
            model = build_model(cfg, HEADS[arch]).eval()
            r, c = tp.benchmark_model(model, arch, cfg, inputs, run, [device])
            rows += r
            candidates += [{"arch": arch, "input_size": size, **asdict(x)} for x in c]
            if not args.no_train and device.type == train_on.type:
                training.append(tp.training_record(arch, cfg, HEADS[arch], train_on, TRAIN_BATCH[arch], settings))
            log.info("%.0f s elapsed", time.perf_counter() - started)
    # the estimate uses each architecture at its largest measured size (the paper's, when measured)
    largest = {}
    for rec in training:
        if rec["arch"] not in largest or rec["input_size"] > largest[rec["arch"]]["input_size"]:
            largest[rec["arch"]] = rec
    workload = assumed_workload(args, list(largest))
    df = tp.write_table2(
        rows,
        list(largest.values()),
        args.out / "table2.csv" if args.out else None,
        args.out / "table2.md" if args.out else None,
        workload=workload,
    )
    if args.out:
        (args.out / "table2_runs.json").write_text(
            json.dumps(
                {
                    "settings": asdict(settings),
                    "torch": torch.__version__,
                    "onnxruntime": tp._ort_version(),
                    "rows": [asdict(r) for r in rows],
                    "candidates": candidates,
                    "training": training,
                },
                indent=2,
            )
        )
    print(tp.to_markdown(df))
    print("\n".join(ratios(rows)))
    if largest:
        print()
        print("(ASSUMED workload: this script reads no config; the pipeline's table2.md uses the config's)")
        print(format_estimate(study_hours(list(largest.values()), workload), workload))
    if skipped:
        print(f"skipped (deadline): {', '.join(skipped)}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
