"""The production back-end (models/runtime.py): float32 logits equal PyTorch's, batching changes nothing,
its options, the explicit int8 graph and its tolerance check, and Table 2's CPU candidates built from it.

No timing is asserted: speed claims come from benchmarks/model_stage.py only.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from alertvision.data.features import METADATA_FEATURES
from alertvision.models import build_model
from alertvision.models.onnx import onnx_bytes, ort_session
from alertvision.models.runtime import (
    FLOAT32,
    INT8,
    PRODUCTION_BATCH,
    SPINNING_KEY,
    ToleranceExceeded,
    describe,
    input_names,
    pointwise_convs_as_matmuls,
    production_session,
    quantize_int8,
    score_deviation,
    score_logits,
    session_options,
)
from alertvision.reports import table2 as tp

HEAD = {"dense1": 32, "dense2": 8, "dropout": 0.5, "meta_dense1": 16, "meta_dense2": 8, "meta_dropout": 0.2}
CNN = {
    "kind": "cnn",
    "input_size": 63,
    "input_scale": 63.0,
    "conv1_channels": 8,
    "conv2_channels": 16,
    "conv_kernel": 3,
    "conv_dropout1": 0.25,
    "conv_dropout2": 0.25,
}
CONVNEXT = {"kind": "timm", "timm_name": "convnext_pico", "input_size": 63, "input_scale": 63.0}
#: Alerts scored per test: more than one production batch, and not a multiple of it.
N_ALERTS = PRODUCTION_BATCH + 44


def _model(arch_cfg: dict, modality: str = "image", layer_scale: float | None = None) -> torch.nn.Module:
    """A random-init model; ``layer_scale``: ConvNeXt's layer scales set to it (timm starts them at 1e-6,
    where the blocks barely reach the logit and any int8 error there is invisible)."""
    torch.manual_seed(0)
    model = build_model({**arch_cfg, "modality": modality}, HEAD).eval()
    if layer_scale is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("gamma"):
                    p.fill_(layer_scale)
    return model


def _inputs(n: int = N_ALERTS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    triplet = rng.standard_normal((n, 3, 63, 63), dtype=np.float32)
    triplet /= np.linalg.norm(triplet.reshape(n, 3, -1), axis=-1)[..., None, None]
    metadata = rng.standard_normal((n, len(METADATA_FEATURES)), dtype=np.float32)
    return triplet, metadata


def _torch_logits(model: torch.nn.Module, triplet: np.ndarray, metadata: np.ndarray | None) -> np.ndarray:
    with torch.inference_mode():
        x = torch.from_numpy(triplet)
        out = model((x, torch.from_numpy(metadata))) if metadata is not None else model(x)
    return out.numpy().reshape(-1)


@pytest.fixture(scope="module")
def convnext_blob() -> bytes:
    return onnx_bytes(_model(CONVNEXT, layer_scale=0.3))


@pytest.mark.parametrize(
    "arch_cfg, modality",
    [(CNN, "image"), (CONVNEXT, "image"), (CNN, "multimodal")],
    ids=["cnn", "convnext", "cnn-multimodal"],
)
def test_float32_logits_equal_pytorch(arch_cfg, modality):
    model = _model(arch_cfg, modality)
    triplet, metadata = _inputs()
    metadata = metadata if modality == "multimodal" else None
    session = production_session(onnx_bytes(model), threads=2)
    got = score_logits(session, triplet, metadata)
    assert got.dtype == np.float32 and got.shape == (N_ALERTS,)
    np.testing.assert_allclose(got, _torch_logits(model, triplet, metadata), rtol=0, atol=1e-5)


def test_convnext_with_trained_like_layer_scales_equals_pytorch(convnext_blob):
    model = _model(CONVNEXT, layer_scale=0.3)
    triplet, _ = _inputs()
    got = score_logits(production_session(convnext_blob, threads=1), triplet, None)
    np.testing.assert_allclose(got, _torch_logits(model, triplet, None), rtol=0, atol=1e-5)


def test_batching_gives_the_scores_of_one_batch(convnext_blob, tmp_path):
    session = production_session(convnext_blob, threads=2)
    triplet, _ = _inputs()
    whole = score_logits(session, triplet, None, batch_size=N_ALERTS)
    for batch in (1, 7, 64, PRODUCTION_BATCH):
        np.testing.assert_allclose(score_logits(session, triplet, None, batch_size=batch), whole, rtol=0, atol=1e-6)
    np.save(tmp_path / "images.npy", triplet)
    memmapped = np.load(tmp_path / "images.npy", mmap_mode="r")  # read batch by batch
    np.testing.assert_allclose(score_logits(session, memmapped, None), whole, rtol=0, atol=1e-6)


def test_inputs_are_checked():
    model = _model(CNN, "multimodal")
    session = production_session(onnx_bytes(model))
    triplet, metadata = _inputs(10)
    assert input_names(session) == ["triplet", "metadata"]
    with pytest.raises(ValueError, match="metadata"):
        score_logits(session, triplet, None)
    with pytest.raises(ValueError, match="lengths"):
        score_logits(session, triplet, metadata[:5])
    with pytest.raises(ValueError, match="batch_size"):
        score_logits(session, triplet, metadata, batch_size=0)
    assert score_logits(session, triplet[:0], metadata[:0]).shape == (0,)
    image_only = production_session(onnx_bytes(_model(CNN)))
    np.testing.assert_array_equal(score_logits(image_only, triplet, metadata), score_logits(image_only, triplet))


def test_session_options():
    import onnxruntime as ort

    options = session_options(3)
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.enable_cpu_mem_arena and options.enable_mem_pattern
    assert options.get_session_config_entry(SPINNING_KEY) == "1"
    assert session_options(1, spinning=False).get_session_config_entry(SPINNING_KEY) == "0"
    with pytest.raises(ValueError, match="threads"):
        session_options(0)


def test_ort_session_is_the_production_float32_session(convnext_blob, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(convnext_blob)
    triplet, _ = _inputs(40)
    want = score_logits(production_session(convnext_blob, threads=2), triplet)
    for session in (ort_session(convnext_blob), ort_session(path, 2), production_session(str(path), 1)):
        np.testing.assert_allclose(score_logits(session, triplet), want, rtol=0, atol=1e-6)
    assert ort_session(path, 2).get_session_options().intra_op_num_threads == 2


def test_precision_is_explicit(convnext_blob):
    with pytest.raises(ValueError, match="precision"):
        production_session(convnext_blob, precision="bfloat16")
    with pytest.raises(ValueError, match="check"):
        production_session(convnext_blob, precision=INT8)  # int8 is never built unchecked


def test_pointwise_rewrite_keeps_float32_and_counts_the_1x1_convs(convnext_blob):
    model = _model(CONVNEXT, layer_scale=0.3)
    pointwise = sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) for m in model.modules())
    rewritten, matmuls = pointwise_convs_as_matmuls(onnx.load_from_string(convnext_blob))
    assert len(matmuls) == pointwise == 24  # two per ConvNeXt-pico block
    assert not any(n.op_type == "Conv" and n.name.endswith("fc1/Conv") for n in rewritten.graph.node)
    triplet, _ = _inputs(64)
    session = production_session(rewritten.SerializeToString(), threads=2)
    np.testing.assert_allclose(score_logits(session, triplet), _torch_logits(model, triplet, None), rtol=0, atol=1e-5)


def test_int8_is_checked_against_float32(convnext_blob):
    triplet, _ = _inputs()
    check = (triplet[:128], None)
    session = production_session(convnext_blob, 2, precision=INT8, check=check, tolerance=1e-3)
    reference = production_session(convnext_blob, 2)
    dev = score_deviation(session, reference, triplet, None)
    assert 0 < dev <= 1e-3  # quantised (not float32), within Table 2's tolerance on these weights
    ops = [n.op_type for n in onnx.load_from_string(quantize_int8(convnext_blob)).graph.node]
    assert ops.count("MatMulInteger") == 24 and ops.count("DynamicQuantizeLinear") == 24  # the 1x1 convs only
    assert ops.count("Gemm") + ops.count("MatMul") == 3  # the MLP head stays float32
    with pytest.raises(ToleranceExceeded, match="tolerance"):
        production_session(convnext_blob, 2, precision=INT8, check=check, tolerance=1e-9)


def test_int8_needs_1x1_convolutions():
    with pytest.raises(ValueError, match="1x1"):
        quantize_int8(onnx_bytes(_model(CNN)))


def test_describe_names_precision_threads_and_batch():
    assert "float32" in describe(FLOAT32, 2) and "2 intra-op threads" in describe(FLOAT32, 2)
    assert "int8" in describe(INT8, 1, 256) and describe(INT8, 1, 256).endswith("batch 256")


def test_table2_cpu_candidates_use_the_production_back_end():
    model = _model(CONVNEXT)
    settings = tp.BenchSettings(batch_size=32, cpu_batch_size=PRODUCTION_BATCH, cpu_threads=2)
    specs = tp.cpu_candidates(model, settings)
    ort_specs = [(setup, batch) for setup, batch, _ in specs if setup.startswith("onnxruntime")]
    assert ort_specs == [(describe(FLOAT32, 2), 32), (describe(FLOAT32, 2), PRODUCTION_BATCH)] + [
        (describe(INT8, 2), PRODUCTION_BATCH)
    ]
    no_int8 = tp.cpu_candidates(model, tp.BenchSettings(int8=False))
    assert not any("int8" in setup for setup, _, _ in no_int8)
    assert not any("int8" in setup for setup, _, _ in tp.cpu_candidates(_model(CNN), settings))  # no 1x1 convs
    scorer = next(factory for setup, batch, factory in specs if batch == PRODUCTION_BATCH)()
    triplet, _ = _inputs(40)
    scores = scorer.score(triplet, np.arange(40))
    want = torch.sigmoid(torch.from_numpy(_torch_logits(model, triplet, None))).numpy()
    np.testing.assert_allclose(scores, want, rtol=0, atol=1e-6)
