"""The model factory: every architecture, input sizes, save and load."""

from __future__ import annotations

import pytest
import torch

from alertvision.models import TIMM_HEADS, build_model, load_model, save_model
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
    save_model(model, tmp_path / "model.pt", spec=ARCHS["convnext"], head_cfg=HEAD, info={"arch": "convnext"})
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
    save_model(model, tmp_path / "model.pt", spec=ARCHS["cnn"], head_cfg=HEAD, info={})
    loaded, _ = load_model(tmp_path / "model.pt")
    assert loaded.input_norm.spec() == norm
    x = torch.randn(2, 3, 63, 63)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_a_model_saved_before_input_norm_loads_and_scales_as_then(tmp_path):
    arch = {**ARCHS["cnn"], "input_scale": 63.0}
    torch.manual_seed(4)
    model = build_model(arch, HEAD).eval()
    save_model(model, tmp_path / "model.pt", spec=arch, head_cfg=HEAD, info={})
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
    from alertvision.config import validate_config
    from alertvision.study.jobs import model_spec, training_params

    config = validate_config({"grid": {"archs": ["cnn"], "modalities": ["image", "multimodal"]}})
    spec, training = model_spec(config, "cnn", "image"), training_params(config, "cnn", "image")
    assert {
        k: getattr(spec, k)
        for k in ("conv1_channels", "conv2_channels", "conv_kernel", "conv_dropout1", "conv_dropout2")
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


def _convnext_pico_by_hand() -> int:
    """convnext_pico without its head's norm: stem Conv(3, 64, 4x4) + LayerNorm(64); stages of 2, 2, 6, 2
    blocks at 64, 128, 256, 512 channels, each block a depthwise 7x7 conv (49d + d), LayerNorm (2d), Linear
    d -> 4d and 4d -> d (8d^2 + 5d) and layer scale (d), 8d^2 + 58d in all; before stages 2-4 a
    LayerNorm(d_in) and Conv(d_in, d, 2x2)."""
    dims, depths = (64, 128, 256, 512), (2, 2, 6, 2)
    stem = (3 * 64 * 4 * 4 + 64) + 2 * 64
    blocks = sum(n * (8 * d * d + 58 * d) for d, n in zip(dims, depths, strict=True))
    downsamples = sum(2 * a + (a * b * 2 * 2 + b) for a, b in zip(dims, dims[1:]))
    return stem + blocks + downsamples


def test_multimodal_convnext_keeps_btsbots_head_per_dataset_counted_by_hand():
    """BTSbot's mm_ConvNeXt: flatten alone on ZTF stamps (63 px end at a 1x1 map), global pool + LayerNorm +
    flatten on Legacy Survey images; multimodal.timm_head pool_norm keeps the norm on both."""
    from alertvision.config import validate_config
    from alertvision.study.jobs import model_spec, training_params

    config = validate_config({"grid": {"archs": ["convnext"], "modalities": ["image", "multimodal"]}})
    training = training_params(config, "convnext", "multimodal")
    assert (training["dense1"], training["dense2"], training["meta_dense1"], training["meta_dense2"]) == (
        128,
        16,
        32,
        16,
    )
    backbone = _convnext_pico_by_hand()
    assert backbone == 8_531_648
    # the metadata branch BatchNorm1d(25) -> 32 -> 16 (GELU), then the head (512 + 16) -> 128 -> 16 -> 1
    branch, head = 2 * 25 + (25 * 32 + 32) + (32 * 16 + 16), (528 * 128 + 128) + (128 * 16 + 16) + (16 + 1)
    assert (branch, head) == (1_410, 69_793)
    torch.manual_seed(0)
    ztf = build_model(model_spec(config, "convnext", "multimodal", dataset="ztf"), training).eval()
    ls = build_model(model_spec(config, "convnext", "multimodal", dataset="ls"), training).eval()
    assert sum(p.numel() for p in ztf.backbone.parameters()) == backbone
    assert sum(p.numel() for p in ztf.parameters()) == backbone + branch + head == 8_602_851
    assert sum(p.numel() for p in ls.parameters()) == backbone + 2 * 512 + branch + head == 8_603_875
    x = torch.randn(2, 3, 63, 63) / 63
    with torch.no_grad():
        features = ztf.backbone.forward_features(x)
        assert features.shape == (2, 512, 1, 1)
        torch.testing.assert_close(ztf.backbone(x), features.flatten(1))  # no pool or norm on ZTF stamps
        assert ztf.backbone.num_features == ztf.head.body[0].in_features - 16 == 512
        ls_features = ls.backbone.forward_features(x).mean((2, 3))
        torch.testing.assert_close(ls.backbone(x), ls.backbone.head.norm(ls_features[..., None, None]).flatten(1))
    pooled = validate_config({**config, "multimodal": {**config["multimodal"], "timm_head": "pool_norm"}})
    kept = build_model(model_spec(pooled, "convnext", "multimodal", dataset="ztf"), training)
    assert sum(p.numel() for p in kept.parameters()) == 8_603_875
    before = build_model({**ARCHS["convnext"], "modality": "multimodal"}, training)  # saved before the key
    assert sum(p.numel() for p in before.parameters()) == 8_603_875
    # the image ConvNeXt keeps timm's pool and norm, as BTSbot's ConvNeXt does
    image = build_model(model_spec(config, "convnext", "image"), training_params(config, "convnext", "image"))
    assert sum(p.numel() for p in image.backbone.parameters()) == backbone + 2 * 512


def test_flatten_head_needs_a_one_pixel_map_and_leaves_maxvit_as_it_is():
    spec = {"kind": "timm", "timm_name": "convnext_pico", "modality": "multimodal", "timm_head": "flatten"}
    head = {**HEAD, "meta_dense1": 8, "meta_dense2": 4, "meta_dropout": 0.1}
    with pytest.raises(ValueError, match="input_size 64 ends at 2x2.*multimodal.timm_head: pool_norm"):
        build_model({**spec, "input_size": 64}, head)
    maxvit = {**ARCHS["maxvit"], "modality": "multimodal"}
    counts = [sum(p.numel() for p in build_model({**maxvit, "timm_head": h}, head).parameters()) for h in TIMM_HEADS]
    assert counts[0] == counts[1]  # MaxViT's timm head has no norm: BTSbot keeps its global pool alone
    with pytest.raises(ValueError, match="unknown timm_head 'avg'"):
        build_model({**spec, "input_size": 63, "timm_head": "avg"}, head)


def test_the_metadata_only_model_is_btsbots_um_nn_counted_by_hand(tmp_path):
    """um_nn: BatchNorm1d(25) -> Dense(meta_dense1) -> ReLU -> Dropout -> Dense(meta_dense2) -> ReLU -> Dense(1)."""
    from alertvision.config import validate_config
    from alertvision.study.jobs import model_spec, training_params

    config = validate_config({"grid": {"archs": ["cnn"], "modalities": ["image", "multimodal"]}})
    spec, training = model_spec(config, "none", "multimodal"), training_params(config, "none", "multimodal")
    assert spec.head == "um_nn" and (training["meta_dense1"], training["meta_dense2"]) == (32, 16)
    model = build_model(spec, training).eval()
    by_hand = 2 * 25 + (25 * 32 + 32) + (32 * 16 + 16) + (16 + 1)
    assert sum(p.numel() for p in model.parameters()) == by_hand == 1_427
    layers = [type(m).__name__ for m in model.metadata.body] + [type(model.head.out).__name__]
    assert layers == ["BatchNorm1d", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear"]
    meta = torch.randn(5, 25)
    with torch.no_grad():  # the embedding is the branch's output, the logit one Dense of it
        torch.testing.assert_close(model.embed((None, meta)), model.metadata(meta))
        torch.testing.assert_close(model((None, meta)), model.head.out(model.metadata(meta)).squeeze(-1))
    save_model(model, tmp_path / "um_nn.pt", spec=spec, head_cfg=training, info={})
    loaded, _ = load_model(tmp_path / "um_nn.pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded((None, meta)), model((None, meta)))
    # the switch: the backbones' head (dense1 128, dense2 16, dropout) after the branch, as before
    mlp = build_model(spec.with_values(head="mlp"), training)
    assert sum(p.numel() for p in mlp.parameters()) == by_hand - 17 + (16 * 128 + 128) + (128 * 16 + 16) + 17 == 5_667
    # a model saved before the key (no `head`) is rebuilt as it was trained
    before = build_model({"kind": "none", "modality": "multimodal"}, training)
    assert sum(p.numel() for p in before.parameters()) == 5_667


def test_pretrained_convnext_on_ztf_loads_every_tensor_then_drops_the_head_norm_as_btsbot(tmp_path):
    """BTSbot creates the pretrained model, then replaces its head: the pretrained LayerNorm is loaded and
    discarded; every other tensor is the published one."""
    import json

    import timm
    from safetensors.torch import save_file

    from alertvision.models.weights import resolve_weights

    folder = tmp_path / "w"
    folder.mkdir()
    torch.manual_seed(3)
    published = timm.create_model("convnext_pico", pretrained=False, num_classes=0)
    state = {k: v.contiguous() for k, v in published.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"architecture": "convnext_pico", "num_classes": 0}))
    spec = {**ARCHS["convnext"], "modality": "multimodal", "timm_head": "flatten"}
    head = {**HEAD, "meta_dense1": 8, "meta_dense2": 4, "meta_dropout": 0.1}
    model = build_model(spec, head, resolve_weights(f"local-dir:{folder}"))
    backbone = model.backbone.state_dict()
    assert {k for k in state if k not in backbone} == {"head.norm.weight", "head.norm.bias"}
    assert all(torch.equal(backbone[k], state[k]) for k in backbone)
