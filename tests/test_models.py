"""The model factory: every architecture, input sizes, save and load."""

from __future__ import annotations

import pytest
import torch

from alertvision.models import build_model, load_model, save_model

HEAD = {"dense1": 32, "dense2": 8, "dropout": 0.5}
ARCHS = {
    "cnn": {"kind": "cnn", "input_size": 63, "conv1_channels": 16, "conv2_channels": 32, "conv_kernel": 5,
            "conv_dropout1": 0.25, "conv_dropout2": 0.25},
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
