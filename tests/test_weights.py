"""Weight resolution, offline: local-dir folders and a filled Hugging Face cache in the real layouts."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
import timm
import torch
from safetensors.torch import save_file

from alertvision.models import build_model
from alertvision.models.weights import WeightsInvalid, WeightsUnavailable, hub_repo, resolve_weights

HEAD = {"dense1": 16, "dense2": 8, "dropout": 0.1}
CONVNEXT = {"kind": "timm", "timm_name": "convnext_pico", "input_size": 63}


def _write_hub_folder(folder, num_classes=0, fmt="safetensors", architecture="convnext_pico"):
    """A folder as timm / Zoobot publish them: config.json (architecture, num_classes) + weights."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(123)
    model = timm.create_model("convnext_pico", pretrained=False, num_classes=num_classes)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    cfg = {"architecture": architecture, "num_classes": num_classes, "num_features": 512,
           "pretrained_cfg": {"input_size": [3, 224, 224], "fixed_input_size": False, "interpolation": "bicubic",
                              "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "num_classes": num_classes,
                              "first_conv": "stem.0", "classifier": "head.fc"}}
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


@pytest.mark.parametrize("missing, expected", [("config.json", "config.json is missing"),
                                               ("model.safetensors", "holds none of")])
def test_a_broken_folder_names_the_file(tmp_path, missing, expected):
    _write_hub_folder(tmp_path / "w")
    (tmp_path / "w" / missing).unlink()
    with pytest.raises(WeightsInvalid, match=expected):
        resolve_weights(f"local-dir:{tmp_path / 'w'}")


class _FailingHub(http.server.BaseHTTPRequestHandler):
    status = 500

    def do_GET(self):  # noqa: N802 - http.server API
        body = json.dumps({"error": "server error"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status", [500, 401])
def test_download_failure_from_the_hub_is_a_clear_error(tmp_path, monkeypatch, status):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    handler = type("Handler", (_FailingHub,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(WeightsUnavailable) as err:
            resolve_weights("convnext_pico.d1_in1k", cache_dir=str(tmp_path / "hub"),
                            endpoint=f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
    msg = str(err.value)
    assert "download of timm/convnext_pico.d1_in1k failed" in msg and "local_dirs" in msg
