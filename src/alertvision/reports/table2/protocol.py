"""The measuring protocol: screening candidates, alternating trials of the two modes, peak memory, the
rows of one model."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from alertvision.reports.table2.backends import (
    CandidateSpec,
    Scorer,
    TorchScorer,
    compiled,
    cpu_candidates,
    cuda_candidates,
    paper_scorer,
)
from alertvision.reports.table2.probes import (
    AlertInputs,
    _sync,
    alert_sequence,
    available_devices,
    device_name,
    max_deviation,
    peak_rss_mb,
    reset_peak_rss,
    timed_scope,
)
from alertvision.reports.table2.settings import PAPER, PRODUCTION, BenchSettings, Candidate, Row
from alertvision.settings import ModelSpec

log = logging.getLogger(__name__)

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


def _timm_name(model_spec: ModelSpec) -> str:
    model_spec = ModelSpec.of(model_spec)
    return model_spec.timm_name or "BTSbot CNN (custom)"


def device_rows(
    arch: str,
    model_spec: ModelSpec | Mapping[str, Any],
    device: torch.device,
    results: Mapping[str, ModeResult],
    settings: BenchSettings,
    inputs: AlertInputs,
) -> list[Row]:
    """The two Table 2 rows of one device (``inputs``: what the trials scored, for the scope column)."""
    model_spec = ModelSpec.of(model_spec)
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
                timm_name=_timm_name(model_spec),
                input_size=model_spec.image_size,
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
    model_spec: ModelSpec | Mapping[str, Any],
    inputs: AlertInputs,
    settings: BenchSettings,
    devices: Iterable[torch.device] | None = None,
) -> tuple[list[Row], list[Candidate]]:
    """Table 2 rows (paper and production, per device) and the production candidates of one model."""
    model_spec = ModelSpec.of(model_spec)
    model = model.cpu().eval()
    rows: list[Row] = []
    report: list[Candidate] = []
    for device in devices or available_devices():
        log.info("%s on %s: %s", arch, device_name(device), inputs.source)
        results, candidates = benchmark_device(model, device, inputs, settings)
        rows += device_rows(arch, model_spec, device, results, settings, inputs)
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
