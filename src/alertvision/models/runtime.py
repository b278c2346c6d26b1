"""The production back-end on the CPU: one onnxruntime session recipe and batch size, shared by Table 2's
production candidates and by whatever scores alerts for a broker.

What was measured to choose it (``benchmarks/model_stage.py``; ConvNeXt-pico at 63 px, random init, on
a shared 2-core AMD EPYC (Zen 4, AVX-512) with onnxruntime 1.32 and torch 2.14; alerts/s are medians of
interleaved passes over the same random cutouts, ratios to the paper protocol (eager float32, batch 32,
2 torch threads, 580-730 alerts/s) timed in the same rounds):

- float32 with every graph optimisation (``ORT_ENABLE_ALL``: the NCHWc layout, fused GELU), 2 threads,
  batch 256: 1.46-1.77x the paper protocol in nine runs (1.64x, 1,017 alerts/s, in the 2,048-alert
  run); 1 thread: 0.90x. ``ORT_ENABLE_EXTENDED`` (no NCHWc): 0.52x, ``BASIC``: 0.45x. The model costs
  0.134 GFLOP per alert and this machine's float32 GEMM peaks at about 190 GFLOP/s on 2 cores, so no
  float32 back-end passes ~1,400 alerts/s; 2x (~1,250) would need ~87% of that peak over the whole
  network, where this one runs at ~75%.
- the CPU memory arena and memory patterns: on (off: 1.10x against 1.46x); intra-op threads spinning
  between runs: on (off: 1.34x against 1.46x; 1.59x against 1.65x in an earlier sweep); one inter-op
  thread, sequential execution (the graph is a chain); a fixed batch dimension: no gain.
- batch :data:`PRODUCTION_BATCH` = 256: the fastest in both sweeps (32: 1.17x, 64: 1.24x, 128: 1.35x,
  512: 1.29x, 1,024: 1.17x against 1.46x at 256).
- PyTorch instead: ``torch.compile`` (inductor, freezing) at 256: 1.31x; eager channels-last at 256:
  0.87x; eager bf16 autocast at 256: 1.60x with scores 4.3e-4 off float32.
- int8 (explicit, :data:`INT8`): the 1x1 convolutions (about 90% of the FLOPs) rewritten as MatMuls over
  channels-last activations (:func:`pointwise_convs_as_matmuls`; in float32 that graph runs at 1.21x
  against 1.46x for the NCHWc one, so the float32 path keeps the exported graph) and quantised
  dynamically (int8 per-channel weights, uint8 activations quantised per batch by onnxruntime; the stem,
  the depthwise and downsampling convolutions and the MLP head stay float32): 2.67x (1,591 alerts/s) at
  2 threads, 1.65x at 1 thread, scores within 3.1e-4 of float32 with the layer scales set to 0.3.
  Static (calibrated) quantisation of the same MatMuls: 2.1-2.2x; quantising the convolutions
  themselves (QLinearConv, static): 0.8x for the 1x1 ones alone, 2.0x for all of them with scores 2e-3
  off float32 (beyond the tolerance).

int8 is never chosen silently: :func:`production_session` builds it only when asked, and only after its
sigmoid scores on caller-given alerts are within ``tolerance`` (Table 2's, 1e-3 by default) of the
float32 graph's; otherwise it raises :class:`ToleranceExceeded`. Dynamic quantisation scales
activations per batch, so an int8 score also depends (within that tolerance) on the alerts batched
with it; float32 scores do not (to float32 rounding). Random weights say little about a trained
model's int8 error (timm initialises ConvNeXt's layer scales at 1e-6, so the blocks barely reach the
logit): callers check every score they keep, as Table 2 does.

onnx and onnxruntime are imported when a function needs them (Table 2 imports this module on machines
without them).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

#: The exported graph's input and output names (:mod:`alertvision.models.onnx` writes them, sessions feed them).
TRIPLET_INPUT, METADATA_INPUT, OUTPUT = "triplet", "metadata", "logit"


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function in float64, without overflow warnings."""
    z = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


#: Alerts per ``session.run`` (see the module docstring for the measurements behind it).
PRODUCTION_BATCH = 256
FLOAT32, INT8 = "float32", "int8"
Precision = Literal["float32", "int8"]
#: Largest |int8 score - float32 score| (sigmoid scores) :func:`production_session` accepts by default:
#: Table 2's default tolerance.
INT8_TOLERANCE = 1e-3
#: The onnxruntime session config key of intra-op thread spinning.
SPINNING_KEY = "session.intra_op.allow_spinning"

#: (triplet, metadata) of some alerts; None for an input the graph does not take.
Inputs = tuple[np.ndarray | None, np.ndarray | None]


class ToleranceExceeded(ValueError):
    """An int8 graph whose scores stray further from the float32 graph's than allowed."""


def session_options(threads: int = 1, *, spinning: bool = True) -> Any:
    """The onnxruntime session options of the production back-end: ``threads`` intra-op threads, one
    inter-op thread, sequential execution, every graph optimisation (``ORT_ENABLE_ALL``), the CPU memory
    arena and memory patterns on, intra-op threads spinning (``spinning``) between runs."""
    import onnxruntime as ort  # deferred: onnxruntime is heavy

    if int(threads) < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = True
    options.add_session_config_entry(SPINNING_KEY, "1" if spinning else "0")
    return options


def _model_bytes(data: bytes | str | os.PathLike) -> bytes:
    return data if isinstance(data, bytes) else Path(data).read_bytes()


def _session(data: bytes | str | os.PathLike, threads: int) -> Any:
    import onnxruntime as ort  # deferred: onnxruntime is heavy

    source = data if isinstance(data, bytes) else str(data)
    return ort.InferenceSession(source, session_options(threads), providers=["CPUExecutionProvider"])


def production_session(
    data: bytes | str | os.PathLike,
    threads: int = 2,
    *,
    precision: Precision = FLOAT32,
    check: Inputs | None = None,
    tolerance: float = INT8_TOLERANCE,
) -> Any:
    """An onnxruntime CPU session of an exported model (bytes or a file) with the production options
    (:func:`session_options`).

    ``precision`` :data:`FLOAT32` (default): the exported graph as it is. :data:`INT8`: the graph of
    :func:`quantize_int8`, accepted only when its sigmoid scores of the alerts ``check`` (triplet,
    metadata; the graph's inputs, None for one it does not take) are within ``tolerance`` of the float32
    graph's; else :class:`ToleranceExceeded`. The check covers those alerts only.
    """
    if precision == FLOAT32:
        return _session(data, threads)
    if precision != INT8:
        raise ValueError(f"precision must be {FLOAT32!r} or {INT8!r}, got {precision!r}")
    if check is None:
        raise ValueError("precision 'int8' needs alerts to check its scores against float32 (check=...)")
    blob = _model_bytes(data)
    reference = _session(blob, threads)
    session = _session(quantize_int8(blob), threads)
    dev = score_deviation(session, reference, *check)
    if not dev <= tolerance:
        raise ToleranceExceeded(
            f"int8 scores differ from float32 by up to {dev:.2e} on {_rows(*check)} alerts (tolerance {tolerance:g})"
        )
    log.info("int8 session: scores within %.1e of float32 on %d alerts", dev, _rows(*check))
    return session


def _rows(triplet: np.ndarray | None, metadata: np.ndarray | None) -> int:
    return len(triplet) if triplet is not None else len(metadata) if metadata is not None else 0


def input_names(session: Any) -> list[str]:
    """The session's input names (:data:`TRIPLET_INPUT` and/or
    :data:`METADATA_INPUT`)."""
    return [i.name for i in session.get_inputs()]


def score_logits(
    session: Any,
    triplet: np.ndarray | None,
    metadata: np.ndarray | None = None,
    batch_size: int = PRODUCTION_BATCH,
) -> np.ndarray:
    """Logits (float32, one per alert, in order) of ``triplet`` (n, 3, 63, 63) and/or ``metadata``
    (n, 25) through ``session``, ``batch_size`` alerts per run. Each the graph takes must be given
    (same length); one it does not take is ignored. Memory-mapped inputs are read batch by batch."""
    feeds = {TRIPLET_INPUT: triplet, METADATA_INPUT: metadata}
    names = input_names(session)
    arrays = {}
    for name in names:
        if feeds.get(name) is None:
            raise ValueError(f"the model takes {name!r}: pass it")
        arrays[name] = feeds[name]
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) != 1:
        raise ValueError(f"inputs of different lengths: { {k: len(v) for k, v in arrays.items()} }")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    n, out = lengths.pop(), []
    for start in range(0, n, int(batch_size)):
        feed = {k: np.ascontiguousarray(a[start : start + batch_size], dtype=np.float32) for k, a in arrays.items()}
        out.append(np.asarray(session.run([OUTPUT], feed)[0], dtype=np.float32).reshape(-1))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def score_deviation(session: Any, reference: Any, triplet: np.ndarray | None, metadata: np.ndarray | None) -> float:
    """max |sigmoid score of ``session`` - that of ``reference``| over the given alerts (inf if any is NaN),
    both scored in batches of :data:`PRODUCTION_BATCH`."""
    got = sigmoid(score_logits(session, triplet, metadata))
    want = sigmoid(score_logits(reference, triplet, metadata))
    if len(got) == 0:
        return 0.0
    dev = np.abs(got - want)
    return float(dev.max()) if np.all(np.isfinite(dev)) else float("inf")


def _attrs(node: "onnx.NodeProto") -> dict[str, Any]:
    from onnx import helper  # deferred: onnx is heavy

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def pointwise_convs_as_matmuls(model: "onnx.ModelProto") -> tuple["onnx.ModelProto", list[str]]:
    """A copy of ``model`` whose 1x1 convolutions (group 1, stride 1, no padding or dilation, constant
    weight) are Transpose(NHWC) -> MatMul -> Add(bias) -> Transpose(NCHW), and the names of those MatMuls.

    The same function in float32 (to rounding); onnxruntime cancels the transposes between consecutive
    ones. It exists for int8: a MatMul over (batch x height x width, channels) quantises into one large
    integer GEMM, where a quantised 1x1 convolution (QLinearConv) is slower than float32.
    """
    import onnx  # deferred: onnx is heavy
    from onnx import helper, numpy_helper  # deferred: onnx is heavy

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    initializers = {i.name: i for i in graph.initializer}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.input[0] in initializers}
    nodes, matmuls = [], []
    for node in graph.node:
        a = _attrs(node) if node.op_type == "Conv" else {}
        weight = alias.get(node.input[1], node.input[1]) if node.op_type == "Conv" else None
        pointwise = (
            node.op_type == "Conv"
            and weight in initializers
            and a.get("group", 1) == 1
            and list(a.get("kernel_shape", [])) == [1, 1]
            and all(s == 1 for s in a.get("strides", [1]))
            and all(p == 0 for p in a.get("pads", [0]))
            and all(d == 1 for d in a.get("dilations", [1]))
            and a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
        )
        if not pointwise:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(initializers[weight])
        if w.ndim != 4 or w.shape[2:] != (1, 1):
            nodes.append(node)
            continue
        base = f"pointwise{len(matmuls)}"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w[:, :, 0, 0].T), f"{base}.weight_t"))
        last = f"{base}.matmul"
        nodes += [
            helper.make_node("Transpose", [node.input[0]], [f"{base}.nhwc"], perm=[0, 2, 3, 1], name=f"{base}.to_nhwc"),
            helper.make_node("MatMul", [f"{base}.nhwc", f"{base}.weight_t"], [last], name=f"{base}.MatMul"),
        ]
        matmuls.append(f"{base}.MatMul")
        if len(node.input) > 2 and node.input[2]:
            nodes.append(helper.make_node("Add", [last, node.input[2]], [f"{base}.biased"], name=f"{base}.bias"))
            last = f"{base}.biased"
        nodes.append(helper.make_node("Transpose", [last], [node.output[0]], perm=[0, 3, 1, 2], name=f"{base}.to_nchw"))
    del graph.node[:]
    graph.node.extend(nodes)
    return out, matmuls


def quantize_int8(data: bytes | str | os.PathLike) -> bytes:
    """The int8 graph of an exported model: its 1x1 convolutions as MatMuls
    (:func:`pointwise_convs_as_matmuls`), quantised dynamically by ``onnxruntime.quantization`` (int8
    weights per output channel, uint8 activations scaled per batch); every other operator stays float32.
    ValueError when the graph has no 1x1 convolution (nothing worth quantising)."""
    import onnx  # deferred: onnx is heavy
    from onnxruntime.quantization import QuantType, quantize_dynamic  # deferred: onnxruntime is heavy

    model, matmuls = pointwise_convs_as_matmuls(onnx.load_from_string(_model_bytes(data)))
    if not matmuls:
        raise ValueError("int8: the graph has no 1x1 convolution to quantise")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "float32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, src)
        quantize_dynamic(
            src,
            dst,
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_quantize=matmuls,
            extra_options={"MatMulConstBOnly": True},
        )
        return dst.read_bytes()


def describe(precision: Precision, threads: int, batch_size: int | None = None) -> str:
    """What the production back-end runs, for tables and logs (the batch size when given)."""
    try:
        import onnxruntime  # deferred: onnxruntime is heavy

        version = f" {onnxruntime.__version__}"
    except ImportError:
        version = ""
    kind = "float32" if precision == FLOAT32 else "int8 dynamic (1x1 convs as MatMuls; per-channel weights)"
    batch = "" if batch_size is None else f", batch {batch_size}"
    return f"onnxruntime{version} {kind}, ORT_ENABLE_ALL, {threads} intra-op threads{batch}"
