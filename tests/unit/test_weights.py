"""Weight resolution and loading: local-dir folders and a filled Hugging Face cache in the real layouts, a
local hub, MaxViT at another input size, and the input normalisation each kind of weights expects."""

from __future__ import annotations

import json
import logging

import pytest
import timm
import torch
from hf_hub_server import LocalHub, quick_client
from safetensors.torch import save_file

from alertvision.models import build_model
from alertvision.models.inputs import input_norm_for, input_norm_from_weights
from alertvision.models.weights import (
    ResolvedWeights,
    WeightsInvalid,
    WeightsUnavailable,
    hub_repo,
    resolve_weights,
)

HEAD = {"dense1": 16, "dense2": 8, "dropout": 0.1}
CONVNEXT = {"kind": "timm", "timm_name": "convnext_pico", "input_size": 63}
MAXVIT = {"kind": "timm", "timm_name": "maxvit_tiny_rw_224", "input_size": 64}


def _write_hub_folder(folder, num_classes=0, fmt="safetensors", architecture="convnext_pico"):
    """A folder as timm / Zoobot publish them: config.json (architecture, num_classes) + weights."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(123)
    model = timm.create_model("convnext_pico", pretrained=False, num_classes=num_classes)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    cfg = {
        "architecture": architecture,
        "num_classes": num_classes,
        "num_features": 512,
        "pretrained_cfg": {
            "input_size": [3, 224, 224],
            "fixed_input_size": False,
            "interpolation": "bicubic",
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "num_classes": num_classes,
            "first_conv": "stem.0",
            "classifier": "head.fc",
        },
    }
    (folder / "config.json").write_text(json.dumps(cfg))
    if fmt == "safetensors":
        save_file(state, str(folder / "model.safetensors"))
    else:
        torch.save(state, folder / "pytorch_model.bin")
    return state


def _assert_loaded(model, state):
    backbone = model.backbone.state_dict()
    shared = [k for k in state if not k.startswith("head.fc")]
    assert shared and all(torch.equal(backbone[k], state[k]) for k in shared)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_local_dir_weights_load_into_the_backbone(tmp_path, fmt):
    state = _write_hub_folder(tmp_path / "w", fmt=fmt)
    resolved = resolve_weights(f"local-dir:{tmp_path / 'w'}")
    assert resolved.architecture == "convnext_pico" and resolved.via == "local-dir"
    _assert_loaded(build_model(CONVNEXT, HEAD, resolved), state)


def test_a_classifier_head_in_the_checkpoint_is_dropped(tmp_path):
    state = _write_hub_folder(tmp_path / "w", num_classes=1000)
    model = build_model(CONVNEXT, HEAD, resolve_weights(f"local-dir:{tmp_path / 'w'}"))
    _assert_loaded(model, state)
    assert model.backbone.num_classes == 0


def test_config_maps_an_id_to_a_folder(tmp_path):
    _write_hub_folder(tmp_path / "zoobot")
    wid = "hf_hub:mwalmsley/zoobot-encoder-convnext_pico"
    resolved = resolve_weights(wid, local_dirs={wid: str(tmp_path / "zoobot")})
    assert resolved.via == "local_dirs" and resolved.weight_id == wid


def test_filled_hugging_face_cache_is_found_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = tmp_path / "hub" / "models--timm--convnext_pico.d1_in1k"
    state = _write_hub_folder(repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    resolved = resolve_weights("convnext_pico.d1_in1k", cache_dir=str(tmp_path / "hub"))
    assert resolved.via == "hf-cache" and resolved.folder.endswith(commit)
    _assert_loaded(build_model(CONVNEXT, HEAD, resolved), state)


def test_hub_repo_of_each_id_form():
    assert hub_repo("convnext_pico.d1_in1k") == "timm/convnext_pico.d1_in1k"
    assert hub_repo("maxvit_tiny_rw_224.sw_in1k") == "timm/maxvit_tiny_rw_224.sw_in1k"
    assert hub_repo("hf_hub:mwalmsley/zoobot-encoder-convnext_pico") == "mwalmsley/zoobot-encoder-convnext_pico"
    assert hub_repo("local-dir:/x") is None


def test_offline_without_weights_fails_naming_the_id_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    wid = "hf_hub:mwalmsley/baseline-encoder-regression-maxvit_tiny"
    with pytest.raises(WeightsUnavailable) as err:
        resolve_weights(wid, cache_dir=str(tmp_path / "empty"))
    msg = str(err.value)
    assert wid in msg and "local_dirs" in msg and "HF_HUB_OFFLINE=1" in msg and str(tmp_path / "empty") in msg


@pytest.mark.parametrize(
    "missing, expected", [("config.json", "config.json is missing"), ("model.safetensors", "holds none of")]
)
def test_a_broken_folder_names_the_file(tmp_path, missing, expected):
    _write_hub_folder(tmp_path / "w")
    (tmp_path / "w" / missing).unlink()
    with pytest.raises(WeightsInvalid, match=expected):
        resolve_weights(f"local-dir:{tmp_path / 'w'}")


@pytest.mark.parametrize("status", ["500", "401"])
def test_download_failure_from_the_hub_is_a_clear_error(tmp_path, monkeypatch, status):
    quick_client(monkeypatch)
    with LocalHub({"timm/convnext_pico.d1_in1k": {"config.json": b"{}", "model.safetensors": b"x"}}) as hub:
        hub.fail(status)
        with pytest.raises(WeightsUnavailable) as err:
            resolve_weights("convnext_pico.d1_in1k", cache_dir=str(tmp_path / "hub"), endpoint=hub.url)
    msg = str(err.value)
    assert "download of timm/convnext_pico.d1_in1k failed" in msg and "local_dirs" in msg


def test_maxvit_at_another_input_size_loads_every_tensor_of_224_weights(tmp_path, caplog):
    """timm's pretrained path resizes MaxViT's relative-position tables; a strict load cannot."""
    torch.manual_seed(7)
    source = timm.create_model("maxvit_tiny_rw_224", pretrained=False, num_classes=0)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "config.json").write_text(
        json.dumps(
            {
                "architecture": "maxvit_tiny_rw_224",
                "num_classes": 0,
                "num_features": source.num_features,
                "pretrained_cfg": {
                    "input_size": [3, 224, 224],
                    "fixed_input_size": True,
                    "mean": [0.5] * 3,
                    "std": [0.5] * 3,
                    "num_classes": 0,
                    "first_conv": "stem.conv1",
                    "classifier": "head.fc",
                },
            }
        )
    )
    save_file(state, str(tmp_path / "w" / "model.safetensors"))
    with caplog.at_level(logging.INFO, logger="alertvision.models.weights"):
        model = build_model(MAXVIT, HEAD, resolve_weights(f"local-dir:{tmp_path / 'w'}"))
    table = "stages.0.blocks.0.attn_block.attn.rel_pos.relative_position_bias_table"
    loaded = model.backbone.state_dict()
    assert state[table].shape == (169, 2) and loaded[table].shape == (9, 2)  # 7x7 windows at 224, 2x2 at 64
    assert model.backbone.pretrained_load["loaded"] == model.backbone.pretrained_load["expected"] == len(state)
    assert f"loaded {len(state)} of {len(state)} tensors from {tmp_path / 'w' / 'model.safetensors'}" in caplog.text
    same = [k for k in state if loaded[k].shape == state[k].shape]
    assert len(same) > 500 and all(torch.equal(loaded[k], state[k]) for k in same)
    with pytest.raises(RuntimeError, match="size mismatch"):
        model.backbone.load_state_dict(state)


# --- the input normalisation follows the weights ------------------------------------------------------


def _norm_folder(path, pretrained_cfg, source_id=None):
    path.mkdir(parents=True)
    cfg = {"architecture": "convnext_pico", "num_classes": 0}
    if pretrained_cfg is not None:
        cfg["pretrained_cfg"] = pretrained_cfg
    (path / "config.json").write_text(json.dumps(cfg))
    if source_id:
        (path / "source.json").write_text(json.dumps({"weight_id": source_id}))
    return str(path)


IMAGENET_CFG = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@pytest.mark.parametrize(
    "weight_id, pretrained_cfg, source_id, expected",
    [
        ("convnext_pico.d1_in1k", IMAGENET_CFG, None, {"mode": "imagenet", **IMAGENET_CFG}),
        (
            "maxvit_tiny_rw_224.sw_in1k",
            {"mean": [0.5] * 3, "std": [0.5] * 3},
            None,
            {"mode": "imagenet", "mean": [0.5] * 3, "std": [0.5] * 3},
        ),
        ("hf_hub:mwalmsley/zoobot-encoder-convnext_pico", IMAGENET_CFG, None, {"mode": "unit"}),
        ("hf_hub:mwalmsley/baseline-encoder-regression-maxvit_tiny", None, None, {"mode": "unit"}),
        ("local-dir:/w", IMAGENET_CFG, "hf_hub:mwalmsley/zoobot-encoder-convnext_pico", {"mode": "unit"}),
        ("hf_hub:someone/encoder", {"input_size": [3, 224, 224]}, None, {"mode": "unit"}),
        ("hf_hub:someone/encoder", {"mean": [0, 0, 0], "std": [1, 1, 1]}, None, {"mode": "unit"}),
        ("convnext_pico.d1_in1k", None, None, {"mode": "imagenet", **IMAGENET_CFG}),  # timm's own cfg for the tag
    ],
)
def test_input_norm_weights_follows_the_weights(tmp_path, weight_id, pretrained_cfg, source_id, expected):
    folder = _norm_folder(tmp_path / "w", pretrained_cfg, source_id)
    weights = ResolvedWeights(weight_id, folder, "convnext_pico", "local-dir")
    assert input_norm_from_weights(weights) == expected
    assert input_norm_for("weights", weights) == expected


def test_no_weights_scale_by_input_scale():
    assert input_norm_from_weights(None, 63.0) == {"mode": "scale", "scale": 63.0}


@pytest.mark.parametrize(
    "weight_id, source_id",
    [
        ("convnext_pico.d1_in1k", None),
        ("hf_hub:mwalmsley/zoobot-encoder-convnext_pico", None),
        ("local-dir:/w", "hf_hub:mwalmsley/zoobot-encoder-convnext_pico"),
        (None, None),
    ],
)
def test_l2_input_is_the_stored_triplet_whatever_the_weights(tmp_path, weight_id, source_id):
    weights = (
        None
        if weight_id is None
        else ResolvedWeights(
            weight_id, _norm_folder(tmp_path / "w", IMAGENET_CFG, source_id), "convnext_pico", "local-dir"
        )
    )
    assert input_norm_for("l2", weights) == {"mode": "scale", "scale": 1.0}
    assert input_norm_for("l2", weights, 63.0) == {"mode": "scale", "scale": 63.0}
    assert input_norm_for("unit", weights) == {"mode": "unit"}


def test_imagenet_input_takes_the_weights_mean_std_or_imagenet_s(tmp_path):
    weights = ResolvedWeights(
        "hf_hub:someone/encoder",
        _norm_folder(tmp_path / "w", {"mean": [0.5] * 3, "std": [0.25] * 3}),
        "convnext_pico",
        "local-dir",
    )
    assert input_norm_for("imagenet", weights) == {"mode": "imagenet", "mean": [0.5] * 3, "std": [0.25] * 3}
    assert input_norm_for("imagenet", None) == {"mode": "imagenet", **IMAGENET_CFG}
    with pytest.raises(ValueError, match="unknown regimen input_norm"):
        input_norm_for("zscore", None)


# --- study.yaml: every regimen's backbone sees the same tensors (the paper's comparison) ------------------


def _published_folder(path, timm_name, weight_id, mean_std):
    """A fetched weights folder as the pipeline writes it: config.json (with the weights' own mean/std),
    model.safetensors and source.json naming the published id."""
    torch.manual_seed(11)
    model = timm.create_model(timm_name, pretrained=False, num_classes=0)
    path.mkdir(parents=True)
    (path / "config.json").write_text(
        json.dumps(
            {
                "architecture": timm_name,
                "num_classes": 0,
                "num_features": model.num_features,
                "pretrained_cfg": {
                    "input_size": [3, 224, 224],
                    "mean": mean_std[0],
                    "std": mean_std[1],
                    "num_classes": 0,
                },
            }
        )
    )
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    (path / "source.json").write_text(json.dumps({"weight_id": weight_id}))
    return ResolvedWeights(weight_id, str(path), timm_name, "fetched")


def _backbone_input(model, x):
    seen = []
    handle = model.backbone.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    with torch.no_grad():
        model.eval()(x)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("arch", ["convnext", "maxvit"])
def test_every_study_regimen_feeds_the_backbone_the_same_tensors(tmp_path, arch):
    from alertvision.config import load_config
    from alertvision.study.jobs import model_spec, training_params
    from alertvision.study.plan import weight_id
    from alertvision.training.loop import build_run_model

    config = load_config("config/study.yaml")
    regimens = config["grid"]["regimens"]
    assert {"none", "imagenet", "galaxyzoo"} <= set(regimens)
    training = training_params(config, arch)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 63, 63)
    x = x / x.flatten(2).norm(dim=-1)[..., None, None]  # stored triplets: each cutout of unit L2 norm
    inputs, specs = {}, {}
    for regimen in regimens:
        spec = model_spec(config, arch, "image", regimen)
        wid = weight_id(config, regimen, arch)
        weights = (
            None
            if wid is None
            else _published_folder(
                tmp_path / regimen,
                config["archs"][arch]["timm_name"],
                wid,
                ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            )
        )
        model = build_run_model(spec, training, weights)
        specs[regimen] = model.input_norm.spec()
        inputs[regimen] = _backbone_input(model, x)
    assert all(s == {"mode": "scale", "scale": 1.0} for s in specs.values()), specs
    size = config["archs"][arch]["input_size"]
    assert inputs["none"].shape == (2, 3, size, size)
    for regimen in regimens:
        assert torch.equal(inputs[regimen], inputs["none"]), regimen
    # the switch: a regimen told to use ImageNet's normalisation sees other tensors
    spec = model_spec(config, arch, "image", "imagenet").with_values(input_norm="imagenet")
    weights = ResolvedWeights(
        weight_id(config, "imagenet", arch), str(tmp_path / "imagenet"), config["archs"][arch]["timm_name"], "fetched"
    )
    assert not torch.equal(_backbone_input(build_run_model(spec, training, weights), x), inputs["none"])
