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
(:mod:`alertvision.reports.table2.estimate` states the assumptions), and writes ``table2.csv`` / ``.md`` / ``.tex``.

Only torch, numpy, pandas and timm are needed at import time (``benchmarks/table2.py`` runs on
machines without the rest of the pipeline's dependencies); ONNX Runtime is optional.

The package: ``settings`` (the config block, the rows), ``probes`` (the machine, the alerts),
``backends`` (scorers, candidates), ``protocol`` (measuring), ``bursts`` (training rates), ``estimate``
(the study's workload and device-hours), ``rendering`` (the files); this module holds the pipeline's steps
and re-exports the rest.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
import torch

from alertvision.atomic import write_json
from alertvision.models import load_model
from alertvision.reports.table2.backends import (  # noqa: F401
    CandidateSpec,
    OrtScorer,
    Scorer,
    TorchScorer,
    _ort_version,
    compiled,
    cpu_bf16_supported,
    cpu_candidates,
    cuda_candidates,
    onnx_session,
    paper_scorer,
)
from alertvision.reports.table2.bursts import (  # noqa: F401
    training_record,
    training_throughput,
)
from alertvision.reports.table2.estimate import StudyWorkload, format_estimate, study_hours  # noqa: F401
from alertvision.reports.table2.probes import (  # noqa: F401
    AlertInputs,
    _chunks,
    _sync,
    alert_sequence,
    available_devices,
    cpu_name,
    device_name,
    max_deviation,
    peak_rss_mb,
    random_inputs,
    reset_peak_rss,
    split_inputs,
    timed_scope,
)
from alertvision.reports.table2.protocol import (  # noqa: F401
    ModeResult,
    Ranked,
    _own_bytes,
    _timed,
    _timm_name,
    accept_production,
    benchmark_device,
    benchmark_model,
    device_rows,
    interleaved_trials,
    memory_pass,
    module_bytes,
    rank_candidates,
    replace_setup,
    screen,
    try_compile,
)
from alertvision.reports.table2.rendering import (  # noqa: F401
    INTEGER_COLUMNS,
    TABLE_COLUMNS,
    TABLE_NOTE,
    _tex,
    markdown_report,
    table_frame,
    to_latex,
    to_markdown,
    write_table2,
)
from alertvision.reports.table2.settings import (  # noqa: F401
    PAPER,
    PRODUCTION,
    BenchSettings,
    Candidate,
    Row,
)
from alertvision.reports.workload import workload_plan  # noqa: F401
from alertvision.settings import ModelSpec

log = logging.getLogger(__name__)

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
    model_spec: ModelSpec | Mapping[str, Any],
    benchmark_cfg: Mapping[str, Any],
    training_cfg: Mapping[str, Any],
    devices: Iterable[torch.device] | None = None,
) -> dict[str, Any]:
    """Benchmark one trained model on a dataset's test split and write its rows to ``out_json``.

    ``model_spec`` is the architecture's model spec (or its ``archs.<arch>`` block) and ``training_cfg``
    the arch's training params (its batch size and head sizes drive the training burst of the compute
    estimate).
    """
    model_spec = ModelSpec.of(model_spec)
    settings = BenchSettings.from_config(benchmark_cfg)
    model, info = load_model(model_path)
    inputs = split_inputs(dataset_dir)
    rows, candidates = benchmark_model(model, arch, model_spec, inputs, settings, devices)
    training = training_record(
        arch, model_spec, training_cfg, train_device(), int(training_cfg["batch_size"]), settings
    )
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


def with_input_size(model_spec: ModelSpec | Mapping[str, Any], size: int | None) -> ModelSpec:
    """A model spec (or an ``archs.<name>`` block) at another input size (None: unchanged)."""
    model_spec = ModelSpec.of(model_spec)
    return model_spec if size is None else model_spec.with_values(input_size=int(size))
