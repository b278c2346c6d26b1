"""Scorers, one way each of turning alerts into scores: eager PyTorch (paper mode and its variants),
ONNX Runtime; the production candidates per device."""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from alertvision.models.onnx import onnx_bytes
from alertvision.models.runtime import FLOAT32, INT8, describe, production_session, score_logits
from alertvision.reports.table2.probes import _chunks, random_inputs
from alertvision.reports.table2.settings import BenchSettings

log = logging.getLogger(__name__)

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
    """Score alerts with an onnxruntime session of the model (CPU execution provider), through
    :func:`alertvision.models.runtime.score_logits`, ``batch_size`` alerts per run."""

    def __init__(self, session: Any, batch_size: int, setup: str):
        self.session, self.batch_size, self.setup = session, int(batch_size), setup
        self.device = torch.device("cpu")

    def score(self, images: np.ndarray, seq: np.ndarray) -> np.ndarray:
        """Sigmoid scores of ``images[seq]``, in order (read batch by batch)."""
        logits = [
            score_logits(self.session, images[rows], None, self.batch_size) for rows in _chunks(seq, self.batch_size)
        ]
        return torch.sigmoid(torch.from_numpy(np.concatenate(logits))).numpy()


Scorer = TorchScorer | OrtScorer


def paper_scorer(model: nn.Module, device: torch.device, settings: BenchSettings) -> TorchScorer:
    """The paper's protocol: float32 (TF32 off), eager, contiguous, batch ``settings.batch_size``."""
    setup = "float32 eager, contiguous" + (", TF32 off" if device.type == "cuda" else "")
    return TorchScorer(model, device, settings.batch_size, setup)


def onnx_session(model: nn.Module, threads: int, precision: str = "float32", tolerance: float = 1e-3) -> Any:
    """An onnxruntime session of ``model`` through :func:`alertvision.models.runtime.production_session`:
    the float32 graph :mod:`alertvision.deploy.export` gives brokers or, ``precision`` 'int8', its int8
    graph, refused (``ToleranceExceeded``) unless its scores of :data:`INT8_CHECK_ALERTS` random cutouts
    are within ``tolerance`` of float32's."""
    if precision == FLOAT32:
        return production_session(onnx_bytes(model), threads)
    check = (random_inputs(INT8_CHECK_ALERTS, seed=1).images, None)
    return production_session(onnx_bytes(model), threads, precision=precision, check=check, tolerance=tolerance)


def has_pointwise_convs(model: nn.Module) -> bool:
    """Whether ``model`` has 1x1 convolutions (what the int8 graph quantises)."""
    return any(
        isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1 and m.stride == (1, 1)
        for m in model.modules()
    )


def _ort_version() -> str | None:
    try:
        import onnxruntime  # deferred: onnxruntime is heavy
    except ImportError:
        return None
    return onnxruntime.__version__


def cpu_bf16_supported() -> bool:
    """Whether oneDNN has fast bf16 kernels on this CPU (AVX512-BF16 / AMX)."""
    with contextlib.suppress(Exception):
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


#: Random cutouts the int8 graph is checked on before Table 2 screens it on the alerts themselves.
INT8_CHECK_ALERTS = 256

#: (setup, batch size, factory) of one production candidate; factories build lazily (exports are slow).
CandidateSpec = tuple[str, int, Callable[[], Scorer]]


def cpu_candidates(model: nn.Module, settings: BenchSettings) -> list[CandidateSpec]:
    """The CPU production candidates: the production back-end of :mod:`alertvision.models.runtime`
    (onnxruntime float32 at the paper's and ``cpu_batch_size`` batch sizes, the latter the production batch
    by default; int8 at ``cpu_batch_size`` when ``settings.int8`` and the model has 1x1 convolutions) and
    eager layouts at ``cpu_batch_size``. Every candidate is screened against the float32 scores as any
    other (an int8 one outside the tolerance is never chosen)."""
    b, threads = settings.cpu_batch_size, settings.cpu_threads
    specs: list[CandidateSpec] = []
    if _ort_version() is not None:
        sessions: dict[str, Any] = {}

        def ort_factory(precision: str, batch: int, setup: str) -> Callable[[], Scorer]:
            def build() -> Scorer:
                if precision not in sessions:  # one export and session per precision, shared by batch sizes
                    sessions[precision] = onnx_session(model, threads, precision, settings.tolerance)
                return OrtScorer(sessions[precision], batch, setup)

            return build

        setup = describe(FLOAT32, threads)
        for batch in dict.fromkeys((settings.batch_size, b)):
            specs.append((setup, batch, ort_factory(FLOAT32, batch, setup)))
        if settings.int8 and has_pointwise_convs(model):
            setup = describe(INT8, threads)
            specs.append((setup, b, ort_factory(INT8, b, setup)))
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
