"""The model stage on the CPU: the paper protocol against the production back-end, in one run.

    python benchmarks/model_stage.py [--alerts 2048] [--threads 2] [--production-threads 1 2] [--rounds 5]
    python benchmarks/model_stage.py --int8 --layer-scale 0.3     # also the explicit int8 graph
    python benchmarks/model_stage.py --sweep                      # also the settings the back-end was chosen over

ConvNeXt-pico at 63 px (benchmarks/table2.py's architecture and head), random weights unless ``--model``
names a trained model.pt (the speed does not depend on the weights; int8's error does: timm starts
ConvNeXt's layer scales at 1e-6, where the blocks barely reach the logit, so ``--layer-scale`` sets them
to a trained-like value for the int8 check). The same random L2-normalised cutouts are scored by

- paper: eager float32 PyTorch, batch 32, ``--threads`` torch threads (Table 2's paper mode);
- production: :func:`alertvision.models.runtime.production_session` (onnxruntime float32) at each
  ``--production-threads``, batches of ``PRODUCTION_BATCH``;
- with ``--int8``: the int8 graph (accepted only within ``--tolerance`` of float32 on the cutouts);
- with ``--sweep``: onnxruntime with one option changed at a time, other batch sizes, the 1x1
  convolutions as MatMuls in float32, eager channels-last, torch.compile (inductor) and bf16 autocast.

Each round scores every alert once with every back-end, back-ends alternating, so a busy machine slows
all alike. Prints per back-end the median alerts/s (and the range), the median over rounds of its
alerts/s divided by the paper's in the same round, and the max |score difference| from the paper's
scores (sigmoid scores, Table 2's deviation).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from alertvision.models import build_model, load_model  # noqa: E402
from alertvision.models.multimodal import MultimodalClassifier  # noqa: E402
from alertvision.models.onnx import onnx_bytes  # noqa: E402
from alertvision.models.runtime import (  # noqa: E402
    FLOAT32,
    INT8,
    PRODUCTION_BATCH,
    SPINNING_KEY,
    describe,
    pointwise_convs_as_matmuls,
    production_session,
    session_options,
)
from alertvision.reports.table2.backends import OrtScorer, TorchScorer, cpu_bf16_supported  # noqa: E402
from alertvision.reports.table2.probes import max_deviation, random_inputs  # noqa: E402

ARCH = {"kind": "timm", "timm_name": "convnext_pico", "input_size": 63, "input_scale": 63.0}
HEAD = {"dense1": 128, "dense2": 16, "dropout": 0.5}
PAPER = "paper: torch eager float32, batch 32"
CPU = torch.device("cpu")
#: Paper rounds further apart than this factor mean other work shared the cores: the ratios are not trusted.
BUSY_SPREAD = 1.3

Scorer = Any  # TorchScorer | OrtScorer: .score(images, seq) -> sigmoid scores


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alerts", type=int, default=2048, help="random cutouts, each scored once per round")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the paper protocol (and of --sweep)")
    p.add_argument("--production-threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up round")
    p.add_argument("--model", type=Path, help="a trained image model.pt (default: ConvNeXt-pico, random weights)")
    p.add_argument("--layer-scale", type=float, help="set ConvNeXt's layer scales (gamma) to this value")
    p.add_argument("--int8", action="store_true", help="also the explicit int8 graph")
    p.add_argument("--tolerance", type=float, default=1e-3, help="int8's score tolerance (Table 2's)")
    p.add_argument("--sweep", action="store_true", help="also the alternatives the back-end was chosen over")
    return p.parse_args(argv)


def the_model(args: argparse.Namespace) -> torch.nn.Module:
    """The model to time: ``--model``, else ConvNeXt-pico at 63 px with random weights; ``--layer-scale`` applied."""
    if args.model is not None:
        model, _ = load_model(args.model)
        if isinstance(model, MultimodalClassifier):
            raise SystemExit(f"{args.model}: a multi-modal model; this benchmark scores triplets only")
    else:
        torch.manual_seed(0)
        model = build_model(ARCH, HEAD)
    if args.layer_scale is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("gamma"):
                    p.fill_(args.layer_scale)
    return model.cpu().eval()


def ort_variant(blob: bytes, threads: int, batch: int, setup: str, change: Callable[[Any], None]) -> OrtScorer:
    """An onnxruntime scorer with the production options but for ``change``."""
    import onnxruntime as ort

    options = session_options(threads)
    change(options)
    return OrtScorer(ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"]), batch, setup)


def sweep(model: torch.nn.Module, blob: bytes, threads: int) -> dict[str, Scorer]:
    """The alternatives to the production back-end (float32, ``threads`` threads)."""
    import onnxruntime as ort

    level = ort.GraphOptimizationLevel
    out: dict[str, Scorer] = {}

    def opt_level(value: Any) -> Callable[[Any], None]:
        return lambda o: setattr(o, "graph_optimization_level", value)

    def no_arena(o: Any) -> None:
        o.enable_cpu_mem_arena = False
        o.enable_mem_pattern = False

    variants = {
        "ORT_ENABLE_EXTENDED (no NCHWc)": opt_level(level.ORT_ENABLE_EXTENDED),
        "ORT_ENABLE_BASIC": opt_level(level.ORT_ENABLE_BASIC),
        "no spinning": lambda o: o.add_session_config_entry(SPINNING_KEY, "0"),
        "no arena, no memory pattern": no_arena,
    }
    for name, change in variants.items():
        out[f"onnxruntime {name}, batch {PRODUCTION_BATCH}"] = ort_variant(
            blob, threads, PRODUCTION_BATCH, name, change
        )
    for batch in (32, 64, 128, 512, 1024):
        out[f"onnxruntime float32, batch {batch}"] = OrtScorer(production_session(blob, threads), batch, "batch")
    import onnx

    rewritten = pointwise_convs_as_matmuls(onnx.load_from_string(blob))[0].SerializeToString()
    out[f"onnxruntime float32, 1x1 convs as MatMuls, batch {PRODUCTION_BATCH}"] = OrtScorer(
        production_session(rewritten, threads), PRODUCTION_BATCH, "matmuls"
    )
    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    out[f"torch eager float32 channels_last, batch {PRODUCTION_BATCH}"] = TorchScorer(
        channels_last, CPU, PRODUCTION_BATCH, "cl", channels_last=True
    )
    import torch._inductor.config as inductor

    inductor.freezing = True
    out[f"torch.compile (inductor, freezing) float32, batch {PRODUCTION_BATCH}"] = TorchScorer(
        torch.compile(copy.deepcopy(model), dynamic=False), CPU, PRODUCTION_BATCH, "compile"
    )
    if cpu_bf16_supported():
        out[f"torch eager bf16 autocast channels_last, batch {PRODUCTION_BATCH}"] = TorchScorer(
            channels_last, CPU, PRODUCTION_BATCH, "bf16", channels_last=True, amp=torch.bfloat16
        )
    return out


def timed_rounds(
    scorers: dict[str, Scorer], images: np.ndarray, rounds: int
) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """(alerts/s per round, scores of the warm-up round) of each scorer, scorers alternating in each round."""
    seq = np.arange(len(images))
    scores = {}
    for name, scorer in scorers.items():  # warm-up: compilation, arenas, thread pools
        start = time.perf_counter()
        scores[name] = scorer.score(images, seq)
        print(f"warm-up {time.perf_counter() - start:6.1f} s  {name}", file=sys.stderr, flush=True)
    rates: dict[str, list[float]] = {name: [] for name in scorers}
    for r in range(rounds):
        for name, scorer in scorers.items():
            start = time.perf_counter()
            scorer.score(images, seq)
            rates[name].append(len(seq) / (time.perf_counter() - start))
        print(f"round {r + 1}/{rounds}: paper {rates[PAPER][-1]:.0f} alerts/s", file=sys.stderr, flush=True)
    return rates, scores


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model = the_model(args)
    images = random_inputs(args.alerts).images
    blob = onnx_bytes(model)
    scorers: dict[str, Scorer] = {PAPER: TorchScorer(model, CPU, 32, PAPER)}
    for threads in args.production_threads:
        name = f"production: {describe(FLOAT32, threads, PRODUCTION_BATCH)}"
        scorers[name] = OrtScorer(production_session(blob, threads), PRODUCTION_BATCH, name)
    if args.int8:
        check = (images[: min(len(images), 512)], None)
        for threads in args.production_threads:
            name = f"int8: {describe(INT8, threads, PRODUCTION_BATCH)}"
            session = production_session(blob, threads, precision=INT8, check=check, tolerance=args.tolerance)
            scorers[name] = OrtScorer(session, PRODUCTION_BATCH, name)
    if args.sweep:
        scorers.update({f"sweep: {k}": v for k, v in sweep(model, blob, args.threads).items()})
    load_before = os.getloadavg()[0]
    rates, scores = timed_rounds(scorers, images, args.rounds)

    paper = rates[PAPER]
    print(
        f"torch {torch.__version__}, {args.alerts} alerts x {args.rounds} rounds, paper at {args.threads} threads; "
        f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print(f"{'alerts/s':>9s} {'(min-max)':>13s} {'x paper':>8s} {'max |dev|':>10s}  back-end")
    for name, r in rates.items():
        ratio = statistics.median(a / b for a, b in zip(r, paper))
        dev = max_deviation(scores[name], scores[PAPER])
        print(f"{statistics.median(r):9.0f} {f'({min(r):.0f}-{max(r):.0f})':>13s} {ratio:8.2f} {dev:10.1e}  {name}")
    best = max((n for n in rates if n.startswith("production")), key=lambda n: statistics.median(rates[n]))
    ratio = statistics.median(a / b for a, b in zip(rates[best], paper))
    print(f"float32 production back-end: {ratio:.2f}x the paper protocol ({'reached' if ratio >= 2 else 'below'} 2x)")
    if max(paper) > BUSY_SPREAD * min(paper):
        print(
            f"WARNING: the paper protocol's rounds range {min(paper):.0f}-{max(paper):.0f} alerts/s: the machine was "
            "busy; eager PyTorch slows far more than onnxruntime when a core is taken, which inflates the ratios: rerun"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
