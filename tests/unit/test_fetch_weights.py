"""Fetching weights once into a local-dir folder: from a local Hugging Face Hub, from folders, and the failures."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
import timm
import torch
from hf_hub_server import LocalHub, quick_client
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from alertvision.models import build_model
from alertvision.models.fetch import fetch_weights, fetched_record, fetched_weights
from alertvision.models.inputs import input_norm_from_weights
from alertvision.models.weights import WeightsInvalid, WeightsUnavailable

ZOOBOT = "hf_hub:mwalmsley/zoobot-encoder-convnext_pico"
ZOOBOT_REPO = "mwalmsley/zoobot-encoder-convnext_pico"
IMAGENET = "convnext_pico.d1_in1k"
IMAGENET_REPO = "timm/convnext_pico.d1_in1k"
MISSING = "stages.3.blocks.1.mlp.fc2.bias"
HEAD = {"dense1": 16, "dense2": 8, "dropout": 0.1}
CONVNEXT = {"kind": "timm", "timm_name": "convnext_pico", "input_size": 63}
#: What timm's push_to_hub writes for a convnext_pico encoder, as Zoobot's config.json does: the
#: architecture and num_classes 0, and timm's default pretrained_cfg (ImageNet mean/std included,
#: although Zoobot encoders take pixels in [0, 1]).
PRETRAINED_CFG = {
    "tag": "",
    "custom_load": False,
    "input_size": [3, 224, 224],
    "fixed_input_size": False,
    "interpolation": "bicubic",
    "crop_pct": 0.95,
    "crop_mode": "center",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "num_classes": 0,
    "pool_size": [7, 7],
    "first_conv": "stem.0",
    "classifier": "head.fc",
}


def _config(architecture="convnext_pico", num_classes=0) -> bytes:
    cfg = {
        "architecture": architecture,
        "num_classes": num_classes,
        "num_features": 512,
        "global_pool": "avg",
        "pretrained_cfg": {**PRETRAINED_CFG, "num_classes": num_classes},
    }
    return json.dumps(cfg, indent=2).encode()


def _bin(state) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def encoder():
    """A randomly initialised convnext_pico backbone (no classifier), as a Zoobot encoder's pytorch_model.bin."""
    torch.manual_seed(0)
    state = timm.create_model("convnext_pico", pretrained=False, num_classes=0).state_dict()
    return state, _bin(state)


@pytest.fixture(scope="module")
def classifier_weights(encoder):
    """convnext_pico with an ImageNet-size classifier, as timm publishes it (model.safetensors)."""
    gen = torch.Generator().manual_seed(1)
    state = {**encoder[0], "head.fc.weight": torch.randn(1000, 512, generator=gen), "head.fc.bias": torch.zeros(1000)}
    return state, safetensors_bytes(state)


@pytest.fixture
def hub(monkeypatch, encoder, classifier_weights):
    quick_client(monkeypatch)
    repos = {
        ZOOBOT_REPO: {"config.json": _config(), "pytorch_model.bin": encoder[1], "README.md": b"# Zoobot\n"},
        IMAGENET_REPO: {"config.json": _config(num_classes=1000), "model.safetensors": classifier_weights[1]},
    }
    with LocalHub(repos) as server:
        yield server


def _folder(path, config: bytes | None, files: dict[str, bytes]):
    path.mkdir(parents=True)
    if config is not None:
        (path / "config.json").write_bytes(config)
    for name, data in files.items():
        (path / name).write_bytes(data)
    return path


def _assert_no_output(out):
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no temporary folder left behind


def _assert_backbone_equals(model, state):
    loaded = model.backbone.state_dict()
    backbone = [k for k in state if not k.startswith("head.fc.")]
    assert backbone and all(torch.equal(loaded[k], state[k]) for k in backbone)


# --- the local hub speaks the protocol ---------------------------------------------------------------


def test_local_hub_serves_snapshot_download_and_hf_hub_download(hub, tmp_path, encoder):
    from huggingface_hub import hf_hub_download, snapshot_download

    folder = snapshot_download(
        ZOOBOT_REPO,
        endpoint=hub.url,
        cache_dir=tmp_path / "a",
        allow_patterns=["config.json", "model.safetensors", "pytorch_model.bin"],
    )
    names = sorted(p.name for p in (tmp_path / "a").glob("models--*/snapshots/*/*"))
    assert names == ["config.json", "pytorch_model.bin"]
    assert (
        tmp_path / "a" / f"models--{ZOOBOT_REPO.replace('/', '--')}" / "snapshots" / hub.repos[ZOOBOT_REPO].commit
    ).samefile(folder)
    assert folder and open(f"{folder}/pytorch_model.bin", "rb").read() == encoder[1]
    assert ("GET", f"/api/models/{ZOOBOT_REPO}/revision/main") in hub.requests
    assert any(p.startswith(f"/api/models/{ZOOBOT_REPO}/tree/") for _, p in hub.requests)
    # the LFS file: a HEAD on /resolve/ answered by a redirect the client does not follow, then a GET on the CDN
    assert [m for m, p in hub.requests if p.startswith("/cdn/")] == ["GET"]
    path = hf_hub_download(ZOOBOT_REPO, "config.json", endpoint=hub.url, cache_dir=tmp_path / "b")
    assert open(path, "rb").read() == _config()


# --- successful fetches ----------------------------------------------------------------------------


def test_zoobot_encoder_is_downloaded_converted_and_loads(hub, tmp_path, encoder):
    out = tmp_path / "resources" / "weights" / "galaxyzoo" / "convnext"
    record = fetch_weights(ZOOBOT, out, cache_dir=str(tmp_path / "hub"), endpoint=hub.url)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "source.json"]
    assert record["via"] == "download" and record["architecture"] == "convnext_pico"
    assert record["revision"] == hub.repos[ZOOBOT_REPO].commit and record["converted_from"] == "pytorch_model.bin"
    assert record["files"]["pytorch_model.bin"] == {
        "sha256": hashlib.sha256(encoder[1]).hexdigest(),
        "size": len(encoder[1]),
    }
    assert json.loads((out / "source.json").read_text())["weight_id"] == ZOOBOT
    state = load_file(str(out / "model.safetensors"))
    assert state.keys() == encoder[0].keys() and all(torch.equal(state[k], encoder[0][k]) for k in state)
    weights = fetched_weights(out)
    assert weights.weight_id == ZOOBOT and input_norm_from_weights(weights) == {"mode": "unit"}
    model = build_model(CONVNEXT, HEAD, weights)
    _assert_backbone_equals(model, encoder[0])
    assert model.backbone.pretrained_load["loaded"] == len(encoder[0])
    # a complete folder is left as it is: no request, no rewrite, even with the hub down
    before = (len(hub.requests), (out / "model.safetensors").stat().st_mtime_ns)
    hub.fail("500")
    assert fetch_weights(ZOOBOT, out, cache_dir=str(tmp_path / "other"), endpoint=hub.url) == record
    assert (len(hub.requests), (out / "model.safetensors").stat().st_mtime_ns) == before


def test_safetensors_source_is_copied_and_its_classifier_dropped(hub, tmp_path, classifier_weights):
    out = tmp_path / "w"
    record = fetch_weights(IMAGENET, out, cache_dir=str(tmp_path / "hub"), endpoint=hub.url)
    assert (out / "model.safetensors").read_bytes() == classifier_weights[1]
    assert record["converted_from"] is None and record["dropped_classifier"] == ["head.fc.bias", "head.fc.weight"]
    weights = fetched_weights(out)
    assert input_norm_from_weights(weights) == {
        "mode": "imagenet",
        "mean": PRETRAINED_CFG["mean"],
        "std": PRETRAINED_CFG["std"],
    }
    model = build_model(CONVNEXT, HEAD, weights)
    _assert_backbone_equals(model, classifier_weights[0])
    assert model.backbone.num_classes == 0


def test_tied_and_strided_tensors_are_converted(tmp_path, encoder):
    state = dict(encoder[0])
    state["stem.1.bias"] = state["stem.1.weight"]  # two names, one storage
    state["stem.0.weight"] = state["stem.0.weight"].transpose(2, 3).contiguous().transpose(2, 3)  # strided view
    src = _folder(tmp_path / "src", _config(), {"pytorch_model.bin": _bin(state)})
    out = tmp_path / "w"
    fetch_weights(ZOOBOT, out, local_dirs={ZOOBOT: str(src)}, allow_download=False)
    converted = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(converted[k], state[k]) for k in state)


def test_a_folder_filled_by_hand_is_used_offline(tmp_path, monkeypatch, encoder):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = _folder(tmp_path / "w", _config(), {"pytorch_model.bin": encoder[1]})
    record = fetch_weights(ZOOBOT, out, cache_dir=str(tmp_path / "empty"))
    assert record["via"] == "out_folder"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "source.json"]
    assert fetched_record(out) is not None and [p.name for p in tmp_path.iterdir()] == ["w"]


# --- failures ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, only, hint",
    [
        ("500", None, "HTTP 500"),
        ("401", None, "gated or private"),
        ("timeout", "/cdn/", "did not answer in time"),
        ("truncate", "/cdn/", "broke off before the file was complete"),
    ],
)
def test_hub_failures_are_clear_and_leave_no_folder(hub, tmp_path, monkeypatch, mode, only, hint):
    if mode == "timeout":
        quick_client(monkeypatch, timeout=0.25)  # the client gives up long before the hub answers (5 s)
    hub.fail(mode, only=only)
    out = tmp_path / "resources" / "galaxyzoo" / "convnext"
    with pytest.raises(WeightsUnavailable) as err:
        fetch_weights(ZOOBOT, out, cache_dir=str(tmp_path / "hub"), endpoint=hub.url)
    msg = str(err.value)
    assert f"download of {ZOOBOT_REPO} failed" in msg and hint in msg
    assert ZOOBOT in msg and str(out) in msg and "local_dirs" in msg
    _assert_no_output(out)


def test_offline_without_weights_names_the_id_and_the_folder_to_fill(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "resources" / "weights" / "galaxyzoo" / "convnext"
    with pytest.raises(WeightsUnavailable) as err:
        fetch_weights(ZOOBOT, out, cache_dir=str(tmp_path / "empty"))
    msg = str(err.value)
    assert ZOOBOT in msg and f"into {out}" in msg
    assert "local_dirs" in msg and "HF_HUB_OFFLINE=1" in msg and "hf download" in msg
    _assert_no_output(out)


@pytest.mark.parametrize(
    "case",
    ["no weights file", "no config", "unknown architecture", "shape mismatch", "missing tensor", "not a state dict"],
)
def test_broken_weights_name_the_file(tmp_path, encoder, case):
    config, files = _config(), {"pytorch_model.bin": encoder[1]}
    named = "pytorch_model.bin"
    if case == "no weights file":
        files, named = {}, "holds none of"
    elif case == "no config":
        config, named = None, "config.json is missing"
    elif case == "unknown architecture":
        config, named = _config("convnext_pica"), "config.json names architecture 'convnext_pica'"
    elif case == "shape mismatch":
        config = _config("convnext_nano")
    elif case == "missing tensor":
        # a config.json with a classifier makes timm load non-strictly (to drop it): only the count notices
        config = _config(num_classes=1000)
        files = {"pytorch_model.bin": _bin({k: v for k, v in encoder[0].items() if k != MISSING})}
    elif case == "not a state dict":
        files = {"pytorch_model.bin": _bin([1, 2, 3])}
    src = _folder(tmp_path / "src", config, files)
    out = tmp_path / "out" / "w"
    with pytest.raises(WeightsInvalid) as err:
        fetch_weights(ZOOBOT, out, local_dirs={ZOOBOT: str(src)})
    msg = str(err.value)
    assert named in msg and str(src) in msg
    if case == "unknown architecture":
        assert "not a timm model" in msg and "convnext_pico" in msg  # the close match
    if case == "shape mismatch":
        assert "size mismatch" in msg and "convnext_nano" in msg
    if case == "missing tensor":
        assert MISSING in msg and f"loaded {len(encoder[0]) - 1} of {len(encoder[0])} backbone tensors" in msg
    _assert_no_output(out)


def test_a_hub_repo_without_config_is_invalid(monkeypatch, tmp_path, encoder):
    quick_client(monkeypatch)
    with LocalHub({ZOOBOT_REPO: {"pytorch_model.bin": encoder[1]}}) as server:
        with pytest.raises(WeightsInvalid, match=f"{ZOOBOT_REPO} has no config.json"):
            fetch_weights(ZOOBOT, tmp_path / "out" / "w", cache_dir=str(tmp_path / "hub"), endpoint=server.url)
    _assert_no_output(tmp_path / "out" / "w")


def test_a_folder_fetched_for_another_id_is_replaced(tmp_path, encoder):
    src = _folder(tmp_path / "src", _config(), {"pytorch_model.bin": encoder[1]})
    out = tmp_path / "out" / "w"
    fetch_weights("hf_hub:someone/old", out, local_dirs={"hf_hub:someone/old": str(src)})
    record = fetch_weights(ZOOBOT, out, local_dirs={ZOOBOT: str(src)})
    assert record["weight_id"] == ZOOBOT and record["via"] == "local_dirs"
    assert fetched_weights(out).weight_id == ZOOBOT and [p.name for p in out.parent.iterdir()] == ["w"]
