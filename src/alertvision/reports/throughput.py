"""Table 2: inference throughput and memory per architecture, and the study's compute estimate.

Two modes are measured side by side on each device (CPU, and CUDA when present):

- **paper**: the paper's protocol. The test split is read from the memory-mapped images in
  batches of 32 (the whole split once per trial when ``min_alerts`` is None, else cycled to reach
  ``min_alerts`` alerts per trial), scored in float32 by the eager
  model (``eval`` + ``torch.inference_mode``; TF32 off on CUDA); alerts/s is the median of the
  timed trials after a warm-up pass, memory is the peak RSS of the process on CPU and
  ``torch.cuda.max_memory_allocated`` on CUDA.
- **production**: what a broker would deploy, chosen per architecture by measuring a short list
  of candidates (CPU: ONNX Runtime and eager PyTorch layouts at a larger batch; CUDA: bf16 / fp16 /
  TF32 autocast, channels-last, pinned non-blocking staging, and ``torch.compile`` of the winner).
  A candidate whose sigmoid scores differ from the paper mode's float32 scores by more than
  ``tolerance`` is never chosen; the reported deviation is the maximum over every measured alert.

Trials of the two modes alternate, so that a busy machine slows both alike. Every row says what
was timed (alerts per trial and their scope). The module also times short training bursts per
architecture, scales them to the device-hours of a study's grid and sweeps
(:mod:`alertvision.reports.workload` states the assumptions), and writes ``table2.csv`` / ``.md`` / ``.tex``.

Only torch, numpy, pandas and timm are needed at import time (``benchmarks/table2.py`` runs on
machines without the rest of the pipeline's dependencies); ONNX Runtime is optional.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import json
import logging
import math
import os
import platform
import resource
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from alertvision.atomic import write_csv, write_json, write_text
from alertvision.models import build_model, load_model
from alertvision.reports.workload import StudyWorkload, format_estimate, study_hours

log = logging.getLogger(__name__)

PAPER, PRODUCTION = "paper", "production"


# --- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchSettings:
    """The ``benchmark`` config block, flattened (defaults are the schema's)."""

    batch_size: int = 32
    trials: int = 3
    min_alerts: int | None = 1024
    gpu_min_alerts: int | None = 16384
    cpu_threads: int = 2
    gpu_batch_size: int = 1024
    cpu_batch_size: int = 256
    compile: bool = False
    tolerance: float = 1e-3
    train_steps: int = 5
    train_warmup: int = 2
    probe_seconds: float = 0.5

    @classmethod
    def from_config(cls, block: Mapping[str, Any]) -> "BenchSettings":
        """Settings from a validated ``benchmark`` block (unknown keys such as ``enabled`` are ignored)."""
        prod = dict(block.get("production", {}))
        flat = {**{k: v for k, v in block.items() if k != "production"}, **prod}
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in flat.items() if k in names})

    def min_alerts_for(self, device: torch.device) -> int | None:
        """Alerts per trial on ``device`` (GPUs need more work per trial to be timed); None: the whole
        split once per trial."""
        return self.gpu_min_alerts if device.type == "cuda" else self.min_alerts


@dataclass
class Row:
    """One row of Table 2."""

    arch: str
    timm_name: str
    input_size: int
    mode: str
    device: str
    threads: int
    batch_size: int
    alerts_per_s: float
    speedup: float
    peak_memory_mb: float
    memory: str
    max_score_dev: float
    within_tolerance: bool
    setup: str
    alerts_timed: int
    scope: str
    trials: int


@dataclass
class Candidate:
    """What the production search learnt about one candidate."""

    device: str
    setup: str
    batch_size: int
    probe_alerts_per_s: float | None = None
    first_batch_dev: float | None = None
    chosen: bool = False
    rejected: str | None = None


# --- the machine ---------------------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or what the platform reports)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "CPU"


def device_name(device: torch.device) -> str:
    """The GPU's name for CUDA, the CPU model otherwise."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS (VmHWM) where Linux allows it; False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The process's peak resident set size in MB (VmHWM, else ru_maxrss)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def available_devices() -> list[torch.device]:
    """The CPU, then CUDA when present."""
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- the alerts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertInputs:
    """Images (memory-mapped or in memory), the rows of them to score, where they come from and what
    the rows are (``label``, the scope column of Table 2)."""

    images: np.ndarray
    rows: np.ndarray
    source: str
    label: str = "test split"


def split_inputs(dataset_dir: str | os.PathLike, split: str = "test") -> AlertInputs:
    """One split of a dataset folder (rows of alerts.parquet whose ``split`` matches), images memory-mapped."""
    from alertvision.data.contract import open_dataset
    from alertvision.evaluation.embeddings import split_rows

    data = open_dataset(dataset_dir)
    rows = split_rows(data.alerts, split)
    return AlertInputs(data.images, rows, f"{dataset_dir} ({split} split, {len(rows)} alerts)", f"{split} split")


def random_inputs(n: int = 2048, seed: int = 0, channels: int = 3, size: int = 63) -> AlertInputs:
    """Random L2-normalised cutouts in memory (for benchmarks that train nothing)."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, channels, size, size), dtype=np.float32)
    images /= np.linalg.norm(images.reshape(n, channels, -1), axis=-1)[..., None, None]
    return AlertInputs(images, np.arange(n), f"{n} random cutouts", "random cutouts")


def alert_sequence(rows: np.ndarray, min_alerts: int | None, batch_size: int) -> np.ndarray:
    """The rows one trial scores: ``rows`` once (``min_alerts`` None; the last batch may be short), or
    ``rows`` cycled to at least ``min_alerts``, in whole batches.

    Every sequence is a prefix of the same cycle, so two modes score the same alert at the same
    position whatever their batch sizes.
    """
    if min_alerts is None:
        return np.asarray(rows)
    n = math.ceil(max(min_alerts, 1) / batch_size) * batch_size
    return np.resize(np.asarray(rows), n)


def timed_scope(inputs: AlertInputs, n_timed: int) -> str:
    """What a trial of ``n_timed`` alerts scored: 'test split' (each alert once), 'test split cycled to N'
    or 'first N of the test split'."""
    n_rows = len(inputs.rows)
    if n_timed == n_rows:
        return inputs.label
    if n_timed > n_rows:
        return f"{inputs.label} cycled to {n_timed:,}"
    return f"first {n_timed:,} of the {inputs.label}"


def _chunks(seq: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(seq), batch_size):
        yield seq[start : start + batch_size]


def max_deviation(scores: np.ndarray, reference: np.ndarray) -> float:
    """max |scores - reference| over their common prefix (positions of the same alerts); inf if any is NaN."""
    n = min(len(scores), len(reference))
    if n == 0:
        return 0.0
    dev = np.abs(scores[:n].astype(np.float64) - reference[:n])
    return float(dev.max()) if np.all(np.isfinite(dev)) else float("inf")


# --- scorers: one way of turning alerts into scores ------------------------------------------------


class TorchScorer:
    """Score alerts with a PyTorch model on one device in one numerical setting.

    ``staged``: batches are copied into one of two pinned host buffers and sent with
    ``non_blocking`` (the next batch is read while the GPU works); scores stay on the device until
    the end of the pass. Otherwise each batch goes over synchronously and its scores come back
    at once, as :func:`alertvision.training.loop.predict` does.
    """

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        batch_size: int,
        setup: str,
        *,
        channels_last: bool = False,
        amp: torch.dtype | None = None,
        tf32: bool = False,
        cudnn_benchmark: bool = False,
        staged: bool = False,
    ):
        self.model, self.device, self.batch_size, self.setup = model, device, int(batch_size), setup
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.amp, self.tf32, self.cudnn_benchmark = amp, tf32, cudnn_benchmark
        self.staged = staged and device.type == "cuda"
        self._buffers: list[torch.Tensor] = []

    @contextlib.contextmanager
    def _numerics(self) -> Iterator[None]:
        """TF32 and cuDNN autotuning as this scorer asks, restored afterwards (CUDA only)."""
        if self.device.type != "cuda":
            yield
            return
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        torch.backends.cudnn.allow_tf32 = self.tf32
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        try:
            yield
        finally:
            (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark) = (
                saved
            )

    def _plain_batches(self, images: np.ndarray, seq: np.ndarray) -> Iterator[torch.Tensor]:
        for rows in _chunks(seq, self.batch_size):
            yield torch.from_numpy(np.ascontiguousarray(images[rows])).to(self.device)

    def _staged_batches(self, images: np.ndarray, seq: np.ndarray) -> Iterator[torch.Tensor]:
        copied: list[torch.cuda.Event | None] = [None, None]
        for i, rows in enumerate(_chunks(seq, self.batch_size)):
            k = i % 2
            if copied[k] is not None:
                copied[k].synchronize()  # the buffer's previous copy to the GPU has finished
            host = self._buffers[k][: len(rows)]
            host.numpy()[...] = images[rows]
            x = host.to(self.device, non_blocking=True)
            copied[k] = torch.cuda.Event()
            copied[k].record()
            yield x

    def score(self, images: np.ndarray, seq: np.ndarray) -> np.ndarray:
        """Sigmoid scores of ``images[seq]``, in order."""
        if self.staged and not self._buffers:  # two pinned staging buffers, allocated once
            shape = (self.batch_size, *images.shape[1:])
            self._buffers = [torch.empty(shape, dtype=torch.float32, pin_memory=True) for _ in range(2)]
        batches = self._staged_batches(images, seq) if self.staged else self._plain_batches(images, seq)
        out: list[torch.Tensor] = []
        with self._numerics(), torch.inference_mode():
            for x in batches:
                x = x.contiguous(memory_format=self.memory_format)
                with torch.autocast(self.device.type, dtype=self.amp or torch.bfloat16, enabled=self.amp is not None):
                    s = torch.sigmoid(self.model(x).float())
                out.append(s if self.staged else s.cpu())
            return torch.cat(out).cpu().numpy()


class OrtScorer:
    """Score alerts with an ONNX Runtime session of the float32 model (CPU execution provider)."""

    def __init__(self, session: Any, batch_size: int, setup: str):
        self.session, self.batch_size, self.setup = session, int(batch_size), setup
        self.device = torch.device("cpu")
        self.input_name = session.get_inputs()[0].name

    def score(self, images: np.ndarray, seq: np.ndarray) -> np.ndarray:
        """Sigmoid scores of ``images[seq]``, in order."""
        logits = [
            self.session.run(None, {self.input_name: np.ascontiguousarray(images[rows])})[0].reshape(-1)
            for rows in _chunks(seq, self.batch_size)
        ]
        return torch.sigmoid(torch.from_numpy(np.concatenate(logits))).numpy()


Scorer = TorchScorer | OrtScorer


def paper_scorer(model: nn.Module, device: torch.device, settings: BenchSettings) -> TorchScorer:
    """The paper's protocol: float32 (TF32 off), eager, contiguous, batch ``settings.batch_size``."""
    setup = "float32 eager, contiguous" + (", TF32 off" if device.type == "cuda" else "")
    return TorchScorer(model, device, settings.batch_size, setup)


def onnx_session(model: nn.Module, threads: int) -> Any:
    """An ONNX Runtime session of ``model`` (float32, dynamic batch, all graph optimisations)."""
    import onnxruntime as ort

    buf = io.BytesIO()
    example = torch.zeros(2, 3, 63, 63)
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buf,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            **legacy,
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])


def _ort_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def cpu_bf16_supported() -> bool:
    """Whether oneDNN has fast bf16 kernels on this CPU (AVX512-BF16 / AMX)."""
    with contextlib.suppress(Exception):
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


#: (setup, batch size, factory) of one production candidate; factories build lazily (exports are slow).
CandidateSpec = tuple[str, int, Callable[[], Scorer]]


def cpu_candidates(model: nn.Module, settings: BenchSettings) -> list[CandidateSpec]:
    """The CPU production candidates: ONNX Runtime (two batch sizes) and eager layouts at the large batch."""
    b, threads = settings.cpu_batch_size, settings.cpu_threads
    specs: list[CandidateSpec] = []
    version = _ort_version()
    if version is not None:
        session: dict[str, Any] = {}

        def ort_factory(batch: int, setup: str) -> Callable[[], Scorer]:
            def build() -> Scorer:
                if "s" not in session:
                    session["s"] = onnx_session(model, threads)
                return OrtScorer(session["s"], batch, setup)

            return build

        for batch in dict.fromkeys((settings.batch_size, b)):
            setup = f"onnxruntime {version}, float32, {threads} intra-op threads"
            specs.append((setup, batch, ort_factory(batch, setup)))
    else:
        log.info("onnxruntime is not installed: no ONNX Runtime candidate")
    cl = "torch eager float32, channels_last"
    specs.append(
        (
            cl,
            b,
            lambda: TorchScorer(
                copy.deepcopy(model).to(memory_format=torch.channels_last),
                torch.device("cpu"),
                b,
                cl,
                channels_last=True,
            ),
        )
    )
    contiguous = "torch eager float32, contiguous"
    specs.append((contiguous, b, lambda: TorchScorer(model, torch.device("cpu"), b, contiguous)))
    if cpu_bf16_supported():
        bf16 = "torch eager, bf16 autocast, channels_last"
        specs.append(
            (
                bf16,
                b,
                lambda: TorchScorer(
                    copy.deepcopy(model).to(memory_format=torch.channels_last),
                    torch.device("cpu"),
                    b,
                    bf16,
                    channels_last=True,
                    amp=torch.bfloat16,
                ),
            )
        )
    return specs


def cuda_candidates(model: nn.Module, device: torch.device, settings: BenchSettings) -> list[CandidateSpec]:
    """The CUDA production candidates: bf16 / fp16 / TF32 / float32, channels_last, pinned staging."""
    b = settings.gpu_batch_size
    specs: list[CandidateSpec] = []
    for name, amp, tf32 in (
        ("bf16 autocast", torch.bfloat16, False),
        ("fp16 autocast", torch.float16, False),
        ("TF32", None, True),
        ("float32", None, False),
    ):
        setup = f"{name}, channels_last, cudnn.benchmark, pinned non_blocking staging"

        def build(amp=amp, tf32=tf32, setup=setup) -> Scorer:
            m = copy.deepcopy(model).to(device).to(memory_format=torch.channels_last).eval()
            return TorchScorer(
                m, device, b, setup, channels_last=True, amp=amp, tf32=tf32, cudnn_benchmark=True, staged=True
            )

        specs.append((setup, b, build))
    return specs


def compiled(scorer: TorchScorer) -> TorchScorer:
    """The same scorer with ``torch.compile`` of its model (compiles on the first batch)."""
    out = copy.copy(scorer)
    out.model = torch.compile(scorer.model, dynamic=False)
    out._buffers = []
    out.setup = f"torch.compile, {scorer.setup}"
    return out


# --- measuring -------------------------------------------------------------------------------------


def _timed(scorer: Scorer, images: np.ndarray, seq: np.ndarray) -> tuple[float, np.ndarray]:
    """(seconds, scores) of one pass."""
    _sync(scorer.device)
    start = time.perf_counter()
    scores = scorer.score(images, seq)
    _sync(scorer.device)
    return time.perf_counter() - start, scores


def memory_pass(scorer: Scorer, model_bytes: int, images: np.ndarray, seq: np.ndarray) -> tuple[np.ndarray, float]:
    """Score ``seq`` once (the untimed warm-up trial) and return (scores, peak memory in MB).

    CUDA: the scorer's weights plus the peak of what it allocated while scoring
    (``torch.cuda.max_memory_allocated``, reset before; other models' weights left out).
    CPU: the process's peak RSS during the pass (VmHWM reset before).
    """
    if scorer.device.type == "cuda":
        _sync(scorer.device)
        torch.cuda.reset_peak_memory_stats(scorer.device)
        before = torch.cuda.memory_allocated(scorer.device)
        scores = scorer.score(images, seq)
        _sync(scorer.device)
        return scores, (torch.cuda.max_memory_allocated(scorer.device) - before + model_bytes) / 2**20
    if not reset_peak_rss():
        log.warning("cannot reset the peak RSS: the CPU memory column is the process's lifetime peak")
    scores = scorer.score(images, seq)
    return scores, peak_rss_mb()


def module_bytes(model: nn.Module | None) -> int:
    """Bytes of a module's parameters and buffers (0 for None)."""
    if model is None:
        return 0
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def screen(
    spec: CandidateSpec,
    device: torch.device,
    images: np.ndarray,
    seq: np.ndarray,
    reference: np.ndarray,
    settings: BenchSettings,
) -> tuple[Candidate, Scorer | None]:
    """Build one candidate, check its first batch against the float32 scores, time a short probe."""
    setup, batch, factory = spec
    cand = Candidate(device_name(device), setup, batch)
    try:
        scorer = factory()
        first = seq[:batch]
        _, scores = _timed(scorer, images, first)  # warm-up: compilation, autotuning, arenas
    except Exception as exc:  # noqa: BLE001 - a candidate that cannot run is reported and skipped
        cand.rejected = f"failed: {type(exc).__name__}: {exc}"[:300]
        log.warning("candidate %s (batch %d) %s", setup, batch, cand.rejected)
        return cand, None
    cand.first_batch_dev = max_deviation(scores, reference)
    if not cand.first_batch_dev <= settings.tolerance:
        cand.rejected = f"max score deviation {cand.first_batch_dev:.2e} > tolerance {settings.tolerance:g}"
        log.info("candidate %s (batch %d): %s", setup, batch, cand.rejected)
        return cand, None
    seconds, n = 0.0, 0
    while n == 0 or (seconds < settings.probe_seconds and n < len(seq)):
        dt, _ = _timed(scorer, images, first)
        seconds, n = seconds + dt, n + len(first)
    cand.probe_alerts_per_s = n / seconds
    log.info(
        "candidate %s (batch %d): %.1f alerts/s, first-batch deviation %.1e",
        setup,
        batch,
        cand.probe_alerts_per_s,
        cand.first_batch_dev,
    )
    return cand, scorer


Ranked = list[tuple[Candidate, Scorer]]


def rank_candidates(
    specs: Sequence[CandidateSpec],
    device: torch.device,
    images: np.ndarray,
    seq: np.ndarray,
    reference: np.ndarray,
    settings: BenchSettings,
) -> tuple[Ranked, list[Candidate]]:
    """The candidates whose first batch is within tolerance, fastest first, and the report of all."""
    ranked: Ranked = []
    report = []
    for spec in specs:
        cand, scorer = screen(spec, device, images, seq, reference, settings)
        report.append(cand)
        if scorer is not None:
            ranked.append((cand, scorer))
    ranked.sort(key=lambda cs: -cs[0].probe_alerts_per_s)
    return ranked, report


def try_compile(
    best: tuple[Candidate, Scorer],
    device: torch.device,
    images: np.ndarray,
    seq: np.ndarray,
    reference: np.ndarray,
    settings: BenchSettings,
) -> tuple[tuple[Candidate, Scorer] | None, Candidate]:
    """``torch.compile`` the fastest eager candidate; the compiled one when it is faster and within tolerance."""
    cand, scorer = best
    start = time.perf_counter()
    fast_cand, fast = screen(
        (f"torch.compile, {scorer.setup}", scorer.batch_size, lambda: compiled(scorer)),
        device,
        images,
        seq,
        reference,
        settings,
    )
    log.info("torch.compile: %.0f s to the end of the probe", time.perf_counter() - start)
    if fast is None or fast_cand.probe_alerts_per_s <= cand.probe_alerts_per_s:
        if fast_cand.rejected is None:
            fast_cand.rejected = f"not faster than eager ({fast_cand.probe_alerts_per_s:.0f} alerts/s)"
        return None, fast_cand
    return (fast_cand, fast), fast_cand


@dataclass
class ModeResult:
    """One mode's measurements on one device."""

    scorer: Scorer
    seq: np.ndarray
    peak_mb: float
    rates: list[float] = field(default_factory=list)
    max_dev: float = 0.0


def _own_bytes(scorer: Scorer) -> int:
    model = getattr(scorer, "model", None)
    return module_bytes(getattr(model, "_orig_mod", model))


def accept_production(
    ranked: Ranked,
    fallback: TorchScorer,
    inputs: AlertInputs,
    min_alerts: int | None,
    reference: np.ndarray,
    settings: BenchSettings,
) -> ModeResult:
    """The fastest candidate whose full warm-up pass stays within tolerance (else the paper setup).

    The screening checked one batch; this pass scores a whole trial, measures the mode's memory
    and rejects a candidate that strays on any alert of it.
    """
    for cand, scorer in ranked:
        seq = alert_sequence(inputs.rows, min_alerts, scorer.batch_size)
        scores, peak_mb = memory_pass(scorer, _own_bytes(scorer), inputs.images, seq)
        dev = max_deviation(scores, reference)
        if dev <= settings.tolerance:
            cand.chosen = True
            return ModeResult(scorer, seq, peak_mb, max_dev=dev)
        cand.rejected = f"full-pass max score deviation {dev:.2e} > tolerance {settings.tolerance:g}"
        log.warning("candidate %s (batch %d): %s", cand.setup, cand.batch_size, cand.rejected)
    log.warning(
        "no production candidate is within tolerance %g on %s: production = the paper setup",
        settings.tolerance,
        fallback.device,
    )
    scorer = replace_setup(fallback, "no candidate within tolerance: the paper setup")
    seq = alert_sequence(inputs.rows, min_alerts, scorer.batch_size)
    _, peak_mb = memory_pass(scorer, _own_bytes(scorer), inputs.images, seq)
    return ModeResult(scorer, seq, peak_mb)


def interleaved_trials(results: Sequence[ModeResult], images: np.ndarray, reference: np.ndarray, trials: int) -> None:
    """Time ``trials`` passes of each mode, alternating modes, and track each mode's score deviation."""
    for t in range(trials):
        for r in results:
            seconds, scores = _timed(r.scorer, images, r.seq)
            r.rates.append(len(r.seq) / seconds)
            r.max_dev = max(r.max_dev, max_deviation(scores, reference))
        log.info("trial %d/%d: %s alerts/s", t + 1, trials, ", ".join(f"{r.rates[-1]:.1f}" for r in results))


def benchmark_device(
    model: nn.Module, device: torch.device, inputs: AlertInputs, settings: BenchSettings
) -> tuple[dict[str, ModeResult], list[Candidate]]:
    """Measure the paper and the production mode of ``model`` (on the CPU) on ``device``."""
    torch.set_num_threads(settings.cpu_threads)
    images, min_alerts = inputs.images, settings.min_alerts_for(device)
    base = model if device.type == "cpu" else copy.deepcopy(model).to(device)
    paper = paper_scorer(base.eval(), device, settings)
    seq = alert_sequence(inputs.rows, min_alerts, paper.batch_size)
    paper.score(images, seq[: paper.batch_size])  # first-batch warm-up
    reference, paper_mb = memory_pass(paper, module_bytes(base), images, seq)
    paper_result = ModeResult(paper, seq, paper_mb)

    specs = cpu_candidates(model, settings) if device.type == "cpu" else cuda_candidates(model, device, settings)
    probe_seq = alert_sequence(inputs.rows, min_alerts, max(s[1] for s in specs))
    ranked, report = rank_candidates(specs, device, images, probe_seq, reference, settings)
    if ranked and settings.compile and device.type == "cuda":
        fast, cand = try_compile(ranked[0], device, images, probe_seq, reference, settings)
        report.append(cand)
        if fast is not None:
            ranked.insert(0, fast)
    production = accept_production(ranked, paper, inputs, min_alerts, reference, settings)
    del ranked
    results = {PAPER: paper_result, PRODUCTION: production}
    interleaved_trials(list(results.values()), images, reference, settings.trials)
    return results, report


def replace_setup(scorer: TorchScorer, setup: str) -> TorchScorer:
    """A shallow copy of ``scorer`` under another description."""
    out = copy.copy(scorer)
    out.setup = setup
    return out


def _timm_name(arch_cfg: Mapping[str, Any]) -> str:
    return arch_cfg.get("timm_name") or "BTSbot CNN (custom)"


def device_rows(
    arch: str,
    arch_cfg: Mapping[str, Any],
    device: torch.device,
    results: Mapping[str, ModeResult],
    settings: BenchSettings,
    inputs: AlertInputs,
) -> list[Row]:
    """The two Table 2 rows of one device (``inputs``: what the trials scored, for the scope column)."""
    paper_rate = float(np.median(results[PAPER].rates))
    memory = "GPU allocated" if device.type == "cuda" else "process peak RSS"
    rows = []
    for mode, r in results.items():
        rate = float(np.median(r.rates))
        setup = f"{r.scorer.setup}, batch {r.scorer.batch_size}"
        ok = r.max_dev <= settings.tolerance
        if not ok:
            setup += f" (EXCEEDS TOLERANCE {settings.tolerance:g})"
        rows.append(
            Row(
                arch=arch,
                timm_name=_timm_name(arch_cfg),
                input_size=int(arch_cfg["input_size"]),
                mode=mode,
                device=device_name(device),
                threads=settings.cpu_threads,
                batch_size=r.scorer.batch_size,
                alerts_per_s=rate,
                speedup=rate / paper_rate,
                peak_memory_mb=r.peak_mb,
                memory=memory,
                max_score_dev=r.max_dev,
                within_tolerance=ok,
                setup=setup,
                alerts_timed=len(r.seq),
                scope=timed_scope(inputs, len(r.seq)),
                trials=len(r.rates),
            )
        )
    return rows


def benchmark_model(
    model: nn.Module,
    arch: str,
    arch_cfg: Mapping[str, Any],
    inputs: AlertInputs,
    settings: BenchSettings,
    devices: Iterable[torch.device] | None = None,
) -> tuple[list[Row], list[Candidate]]:
    """Table 2 rows (paper and production, per device) and the production candidates of one model."""
    model = model.cpu().eval()
    rows: list[Row] = []
    report: list[Candidate] = []
    for device in devices or available_devices():
        log.info("%s on %s: %s", arch, device_name(device), inputs.source)
        results, candidates = benchmark_device(model, device, inputs, settings)
        rows += device_rows(arch, arch_cfg, device, results, settings, inputs)
        report += candidates
        for row in rows[-2:]:
            log.info(
                "%s %s on %s: %.1f alerts/s (x%.2f), %.0f MB, max score deviation %.1e, %s",
                arch,
                row.mode,
                row.device,
                row.alerts_per_s,
                row.speedup,
                row.peak_memory_mb,
                row.max_score_dev,
                row.setup,
            )
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows, report


# --- training throughput and the study's compute ---------------------------------------------------


def training_throughput(
    arch_cfg: Mapping[str, Any],
    head_cfg: Mapping[str, Any],
    device: torch.device,
    *,
    batch_size: int,
    steps: int,
    warmup: int,
    production: bool,
) -> float:
    """Alerts/s of forward + backward + AdamW on random 63x63 inputs (resized by the model as in training).

    Naive: float32, eager, contiguous. Production: channels_last, plus bf16 autocast and fused
    AdamW on CUDA. Inputs stay on the device, so data loading is not included.
    """
    torch.manual_seed(0)
    fmt = torch.channels_last if production else torch.contiguous_format
    model = build_model(arch_cfg, head_cfg).to(device).to(memory_format=fmt).train()
    fused = production and device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if fused else {}))
    x = torch.randn(batch_size, 3, 63, 63, device=device).div_(63).contiguous(memory_format=fmt)
    y = (torch.rand(batch_size, device=device) < 0.4).float()
    loss_fn = nn.BCEWithLogitsLoss()
    amp = production and device.type == "cuda"
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return batch_size * steps / (time.perf_counter() - start)


def training_record(
    arch: str,
    arch_cfg: Mapping[str, Any],
    head_cfg: Mapping[str, Any],
    device: torch.device,
    batch_size: int,
    settings: BenchSettings,
) -> dict[str, Any]:
    """Naive and production training throughput of one architecture on ``device``."""
    torch.set_num_threads(settings.cpu_threads)
    rates = {
        mode: training_throughput(
            arch_cfg,
            head_cfg,
            device,
            batch_size=batch_size,
            steps=settings.train_steps,
            warmup=settings.train_warmup,
            production=mode == PRODUCTION,
        )
        for mode in (PAPER, PRODUCTION)
    }
    production = "bf16 autocast, channels_last, fused AdamW" if device.type == "cuda" else "channels_last"
    record = {
        "arch": arch,
        "kind": arch_cfg["kind"],
        "timm_name": _timm_name(arch_cfg),
        "input_size": int(arch_cfg["input_size"]),
        "device": device_name(device),
        "device_type": device.type,
        "threads": settings.cpu_threads,
        "batch_size": int(batch_size),
        "naive_alerts_per_s": rates[PAPER],
        "production_alerts_per_s": rates[PRODUCTION],
        "naive_setup": "float32 eager, contiguous",
        "production_setup": production,
    }
    log.info(
        "training %s on %s: %.1f alerts/s naive, %.1f alerts/s production (%s)",
        arch,
        record["device"],
        rates[PAPER],
        rates[PRODUCTION],
        production,
    )
    return record


# --- Table 2 files ---------------------------------------------------------------------------------

#: (column, header, format) of the markdown and LaTeX tables.
TABLE_COLUMNS = (
    ("arch", "Architecture", "{}"),
    ("timm_name", "timm name", "{}"),
    ("input_size", "Input", "{}"),
    ("mode", "Mode", "{}"),
    ("device", "Device", "{}"),
    ("threads", "Threads", "{}"),
    ("batch_size", "Batch", "{}"),
    ("alerts_per_s", "Alerts/s", "{:,.1f}"),
    ("speedup", "x paper", "{:.2f}"),
    ("peak_memory_mb", "Peak memory (MB)", "{:,.0f}"),
    ("max_score_dev", "Max score dev.", "{:.1e}"),
    ("alerts_timed", "Alerts timed", "{:,}"),
    ("scope", "Scope", "{}"),
    ("setup", "Setup", "{}"),
)
TABLE_NOTE = (
    "Paper: test split read from the memory-mapped images, batch 32, float32 eager, median of the "
    "timed trials after a warm-up pass. Production: the fastest measured candidate whose sigmoid scores "
    "stay within the tolerance of the float32 scores (max score dev. is over every measured alert). "
    "Alerts timed: alerts scored in each timed trial; scope: what they are. 'test split': the ZTF "
    "dataset's whole test split, each alert once per trial (benchmark.min_alerts / gpu_min_alerts: "
    "null); 'test split cycled to N': the split repeated to N alerts in whole batches (min_alerts: N, "
    "for a split too small to time). "
    "Peak memory: torch.cuda.max_memory_allocated (the mode's weights and working memory) on GPU rows, "
    "the process's peak RSS on CPU rows. Threads: CPU threads of the process."
)


#: Columns printed with "{}" but right-aligned.
INTEGER_COLUMNS = ("input_size", "threads", "batch_size")


def table_frame(rows: Iterable[Row | Mapping[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame in Table 2's column order."""
    records = [asdict(r) if isinstance(r, Row) else dict(r) for r in rows]
    return pd.DataFrame(records, columns=list(Row.__dataclass_fields__))


def to_markdown(df: pd.DataFrame) -> str:
    """Table 2 as a markdown table."""
    lines = [
        "| " + " | ".join(h for _, h, _ in TABLE_COLUMNS) + " |",
        "|" + "|".join("---:" if f != "{}" or c in INTEGER_COLUMNS else "---" for c, _, f in TABLE_COLUMNS) + "|",
    ]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(f.format(r[c]).replace("|", "/") for c, _, f in TABLE_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"), ("_", r"\_"), ("$", r"\$")):
        text = text.replace(a, b)
    return text


def to_latex(df: pd.DataFrame) -> str:
    """Table 2 as a LaTeX tabular (booktabs-free: \\hline only)."""
    align = "".join("r" if f != "{}" or c in INTEGER_COLUMNS else "l" for c, _, f in TABLE_COLUMNS)
    lines = [
        f"\\begin{{tabular}}{{{align}}}",
        "\\hline",
        " & ".join(_tex(h) for _, h, _ in TABLE_COLUMNS) + r" \\",
        "\\hline",
    ]
    for _, r in df.iterrows():
        lines.append(" & ".join(_tex(f.format(r[c])) for c, _, f in TABLE_COLUMNS) + r" \\")
    lines += ["\\hline", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def markdown_report(df: pd.DataFrame, estimate: str | None = None) -> str:
    """table2.md: the table, what it measured, and the compute estimate."""
    parts = ["# Table 2: inference throughput and memory", "", to_markdown(df), TABLE_NOTE, ""]
    if estimate:
        parts += [estimate]
    return "\n".join(parts)


def write_table2(
    rows: Iterable[Row | Mapping[str, Any]],
    training: Sequence[Mapping[str, Any]],
    out_csv: str | os.PathLike | None,
    out_md: str | os.PathLike | None,
    out_tex: str | os.PathLike | None = None,
    workload: StudyWorkload | None = None,
) -> pd.DataFrame:
    """Write Table 2 (csv, md with the compute estimate of ``workload`` below, tex) atomically; returns the
    table. No estimate without a workload or training records."""
    df = table_frame(rows)
    estimate = format_estimate(study_hours(training, workload), workload) if training and workload else None
    if estimate:
        log.info("%s", estimate)
    if out_csv is not None:
        write_csv(out_csv, df)
    if out_md is not None:
        write_text(out_md, markdown_report(df, estimate))
    if out_tex is not None:
        write_text(out_tex, to_latex(df))
    return df


# --- the pipeline's steps --------------------------------------------------------------------------


def train_device() -> torch.device:
    """The device training would use: CUDA when present, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def benchmark_run(
    model_path: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    out_json: str | os.PathLike,
    *,
    arch: str,
    arch_cfg: Mapping[str, Any],
    benchmark_cfg: Mapping[str, Any],
    training_cfg: Mapping[str, Any],
    devices: Iterable[torch.device] | None = None,
) -> dict[str, Any]:
    """Benchmark one trained model on a dataset's test split and write its rows to ``out_json``.

    ``arch_cfg`` is the ``archs.<arch>`` block and ``training_cfg`` the arch's training params (its
    batch size and head sizes drive the training burst of the compute estimate).
    """
    settings = BenchSettings.from_config(benchmark_cfg)
    model, info = load_model(model_path)
    inputs = split_inputs(dataset_dir)
    rows, candidates = benchmark_model(model, arch, arch_cfg, inputs, settings, devices)
    training = training_record(arch, arch_cfg, training_cfg, train_device(), int(training_cfg["batch_size"]), settings)
    out = {
        "arch": arch,
        "model": str(model_path),
        "model_info": info,
        "inputs": inputs.source,
        "test_alerts": len(inputs.rows),
        "settings": asdict(settings),
        "torch": torch.__version__,
        "onnxruntime": _ort_version(),
        "rows": [asdict(r) for r in rows],
        "candidates": [asdict(c) for c in candidates],
        "training": training,
    }
    write_json(out_json, out)
    return out


def table2(
    json_files: Iterable[str | os.PathLike],
    out_csv: str | os.PathLike,
    out_md: str | os.PathLike,
    out_tex: str | os.PathLike,
    workload: StudyWorkload | None = None,
) -> pd.DataFrame:
    """Gather the per-architecture JSON files of :func:`benchmark_run` into Table 2 (with the compute
    estimate of ``workload``, e.g. :meth:`StudyWorkload.from_dataset` of
    :func:`alertvision.reports.workload.workload_plan`)."""
    rows, training = [], []
    for path in json_files:
        data = json.loads(Path(path).read_text())
        rows += data["rows"]
        if data.get("training"):
            training.append(data["training"])
    return write_table2(rows, training, out_csv, out_md, out_tex, workload)


def with_input_size(arch_cfg: Mapping[str, Any], size: int | None) -> dict[str, Any]:
    """A copy of an ``archs.<name>`` block at another input size (None: unchanged)."""
    return dict(arch_cfg) if size is None else {**dict(arch_cfg), "input_size": int(size)}
