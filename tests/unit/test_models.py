"""The model factory: every architecture, input sizes, save and load."""

from __future__ import annotations

import pytest
import torch

from alertvision.models import build_model, load_model, save_model
from alertvision.models.inputs import unit_range

HEAD = {"dense1": 32, "dense2": 8, "dropout": 0.5}
ARCHS = {
    "cnn": {
        "kind": "cnn",
        "input_size": 63,
        "conv1_channels": 16,
        "conv2_channels": 32,
        "conv_kernel": 5,
        "conv_dropout1": 0.25,
        "conv_dropout2": 0.25,
    },
    "convnext": {"kind": "timm", "timm_name": "convnext_pico", "input_size": 63},
    "maxvit": {"kind": "timm", "timm_name": "maxvit_tiny_rw_224", "input_size": 64},
}
BACKBONE_PARAMS = {"convnext": 8.5e6, "maxvit": 28.5e6}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_architecture_builds_and_classifies(arch):
    torch.manual_seed(0)
    model = build_model(ARCHS[arch], HEAD).eval()
    x = torch.randn(3, 3, 63, 63)
    with torch.no_grad():
        assert model(x).shape == (3,)
        assert model.embed(x).shape == (3, HEAD["dense2"])
    if arch in BACKBONE_PARAMS:
        n = sum(p.numel() for p in model.backbone.parameters())
        assert n == pytest.approx(BACKBONE_PARAMS[arch], rel=0.01)
    # every weight trains
    assert all(p.requires_grad for p in model.parameters())


def test_maxvit_is_built_for_its_input_size():
    model = build_model({**ARCHS["maxvit"], "input_size": 96}, HEAD).eval()
    seen = []
    model.backbone.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[-1]))
    with torch.no_grad():
        model(torch.randn(1, 3, 63, 63))
    assert seen == [96]


def test_save_and_load_give_the_same_scores(tmp_path):
    torch.manual_seed(1)
    model = build_model(ARCHS["convnext"], HEAD).eval()
    save_model(model, tmp_path / "model.pt", arch_cfg=ARCHS["convnext"], head_cfg=HEAD, info={"arch": "convnext"})
    loaded, info = load_model(tmp_path / "model.pt")
    x = torch.randn(2, 3, 63, 63)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert info == {"arch": "convnext"}


def test_cnn_refuses_pretrained_weights():
    from alertvision.models.weights import ResolvedWeights

    with pytest.raises(ValueError, match="regimen 'none'"):
        build_model(ARCHS["cnn"], HEAD, ResolvedWeights("x", "/nowhere", "cnn", "local-dir"))


# --- input normalisation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "norm", [{"mode": "unit"}, {"mode": "imagenet", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}]
)
def test_unit_inputs_ignore_a_positive_rescaling(norm):
    torch.manual_seed(2)
    model = build_model(ARCHS["cnn"], HEAD, input_norm=norm).eval()
    x = torch.randn(4, 3, 63, 63) / 63  # L2-normalised scale, negative pixels included
    with torch.no_grad():
        reference = model(x)
        for factor in (1e-3, 0.5, 63.0, 1e4):
            torch.testing.assert_close(model(x * factor), reference, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(model(x.flip(-1)), reference)  # ...but not everything


def test_unit_range_maps_each_channel_onto_zero_one_and_a_flat_channel_to_zero():
    x = torch.randn(2, 3, 8, 8)
    x[1, 2] = 0.25
    y = unit_range(x)
    assert torch.isfinite(y).all() and y.min() == 0 and y.max() == 1
    assert torch.equal(y[1, 2], torch.zeros(8, 8))
    torch.testing.assert_close(y[0].amax(dim=(-2, -1)), torch.ones(3))


def test_scale_is_the_default_and_multiplies_the_input():
    model = build_model({**ARCHS["cnn"], "input_scale": 63.0}, HEAD).eval()
    assert model.input_norm.spec() == {"mode": "scale", "scale": 63.0} and model.input_scale == 63.0
    x = torch.randn(1, 3, 63, 63)
    torch.testing.assert_close(model.input_norm(x), x * 63.0)


def test_input_norm_is_saved_and_restored(tmp_path):
    norm = {"mode": "imagenet", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 1.0]}
    torch.manual_seed(3)
    model = build_model(ARCHS["cnn"], HEAD, input_norm=norm).eval()
    save_model(model, tmp_path / "model.pt", arch_cfg=ARCHS["cnn"], head_cfg=HEAD, info={})
    loaded, _ = load_model(tmp_path / "model.pt")
    assert loaded.input_norm.spec() == norm
    x = torch.randn(2, 3, 63, 63)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_a_model_saved_before_input_norm_loads_and_scales_as_then(tmp_path):
    arch = {**ARCHS["cnn"], "input_scale": 63.0}
    torch.manual_seed(4)
    model = build_model(arch, HEAD).eval()
    save_model(model, tmp_path / "model.pt", arch_cfg=arch, head_cfg=HEAD, info={})
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    del payload["input_norm"]  # the layout of files written before input_norm existed
    torch.save(payload, tmp_path / "old.pt")
    loaded, _ = load_model(tmp_path / "old.pt")
    assert loaded.input_norm.spec() == {"mode": "scale", "scale": 63.0}
    x = torch.randn(2, 3, 63, 63)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_an_unknown_input_norm_is_refused():
    with pytest.raises(ValueError, match="unknown input_norm mode"):
        build_model(ARCHS["cnn"], HEAD, input_norm={"mode": "zscore"})


# --- the baseline is BTSbot's production CNN ------------------------------------------------------------


def _conv(cin, cout, k):
    return cin * cout * k * k + cout


def test_the_default_cnn_is_btsbots_production_model_counted_by_hand():
    from alertvision.config import model_spec, training_params, validate_config

    config = validate_config({"grid": {"archs": ["cnn"], "modalities": ["image", "multimodal"]}})
    spec, training = model_spec(config, "cnn", "image"), training_params(config, "cnn", "image")
    assert {
        k: spec[k] for k in ("conv1_channels", "conv2_channels", "conv_kernel", "conv_dropout1", "conv_dropout2")
    } == {"conv1_channels": 32, "conv2_channels": 64, "conv_kernel": 5, "conv_dropout1": 0.50, "conv_dropout2": 0.55}
    assert training["betas"] == [0.99, 0.99]
    # two conv blocks of two 5x5 convolutions (3 -> 32 -> 32, 32 -> 64 -> 64); 63 -> 31 -> 7 px after the
    # pools, so 64 x 7 x 7 = 3136 features; head Dense(8) -> ReLU -> Dropout(0.20) -> Dense(1)
    convs = _conv(3, 32, 5) + _conv(32, 32, 5) + _conv(32, 64, 5) + _conv(64, 64, 5)
    assert convs == 181_792
    image_model = build_model(spec, training)
    assert sum(p.numel() for p in image_model.parameters()) == convs + (3136 * 8 + 8) + (8 + 1) == 206_897
    assert image_model.backbone.num_features == 3136
    assert isinstance(image_model.head.body[1], torch.nn.ReLU) and image_model.head.body[2].p == 0.20
    # multi-modal: BatchNorm1d(25) -> Dense(128) -> ReLU -> Dropout(0.25) -> Dense(128) -> ReLU beside the CNN,
    # then the same one-layer head on the 3136 + 128 features
    mm_spec, mm_training = model_spec(config, "cnn", "multimodal"), training_params(config, "cnn", "multimodal")
    mm = build_model(mm_spec, mm_training)
    branch = 2 * 25 + (25 * 128 + 128) + (128 * 128 + 128)
    assert sum(p.numel() for p in mm.metadata.parameters()) == branch == 19_890
    assert isinstance(mm.metadata.body[2], torch.nn.ReLU) and mm.metadata.body[3].p == 0.25
    assert sum(p.numel() for p in mm.parameters()) == convs + branch + (3264 * 8 + 8) + 9 == 227_811


def test_timm_metadata_branches_use_gelu_and_a_two_layer_head():
    head = {**HEAD, "meta_dense1": 16, "meta_dense2": 8, "meta_dropout": 0.1}
    model = build_model({**ARCHS["convnext"], "modality": "multimodal"}, head)
    assert isinstance(model.metadata.body[2], torch.nn.GELU) and isinstance(model.head.body[1], torch.nn.GELU)
    assert len(model.head.body) == 5  # Dense, GELU, Dense, GELU, Dropout
