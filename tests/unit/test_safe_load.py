"""Loading a file never runs code in it: every .pt file the tools read (a run's model.pt, a training
checkpoint, a weights file) is read as tensors and plain data only; a planted pickle is refused naming
the file, a truncated model.pt says it is truncated."""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import packet_paths
from test_fetch_weights import ZOOBOT, _config

from alertvision.deploy.export import export_run
from alertvision.models import build_model, load_model, save_model
from alertvision.models.fetch import fetch_weights
from alertvision.models.weights import ResolvedWeights, WeightsInvalid, load_pretrained_backbone
from alertvision.safeload import TruncatedFileError, UnsafeFileError, load_tensors
from alertvision.study.jobs import TrainJob, model_spec, training_params
from alertvision.training.checkpoint import CHECKPOINT_NAME, Checkpointer
from alertvision.training.loop import train_run

HEAD = {"dense1": 8, "dense2": 4, "dropout": 0.1}


class _Payload:
    """What an attacker pickles: unpickling it calls os.system, which creates the marker file."""

    def __init__(self, marker: Path):
        self.command = f"touch {shlex.quote(str(marker))}"

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.fixture
def planted(tmp_path):
    """(the bytes of a torch.save file whose unpickling runs code, the marker file that code creates).

    The fixture first checks the payload is live: loaded the unsafe way, it does create the marker."""
    marker = tmp_path / "MARKER"
    buf = io.BytesIO()
    torch.save({"format": "alertvision-model/1", "key": "x", "state_dict": {}, "boom": _Payload(marker)}, buf)
    control = tmp_path / "control.pt"
    control.write_bytes(buf.getvalue())
    torch.load(control, weights_only=False)  # what the tools did before
    assert marker.exists(), "the planted payload did not run: the tests below would prove nothing"
    marker.unlink()
    control.unlink()
    return buf.getvalue(), marker


def _plant(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _assert_refused(message: str, path: Path, marker: Path) -> None:
    assert not marker.exists(), "the planted file's code ran"
    assert str(path) in message and "not loaded" in message and "could run code" in message
    assert "GLOBAL posix.system" in message  # what the file asked to build


def test_load_tensors_refuses_the_planted_file_and_reads_plain_data(planted, tmp_path):
    data, marker = planted
    path = _plant(tmp_path / "some.pt", data)
    with pytest.raises(UnsafeFileError) as err:
        load_tensors(path, fix="delete it")
    _assert_refused(str(err.value), path, marker)
    assert str(err.value).endswith("; delete it")
    plain = {"t": torch.arange(3), "x": [1, 2.5, "a", None, (True, b"b")], "d": {"k": {1, 2}}}
    torch.save(plain, tmp_path / "plain.pt")
    loaded = load_tensors(tmp_path / "plain.pt", fix="-")
    assert torch.equal(loaded["t"], plain["t"]) and loaded["x"] == plain["x"] and loaded["d"] == plain["d"]


def test_a_planted_checkpoint_stops_the_run_and_is_kept(planted, tiny_datasets, quick_split_file, tmp_path):
    data, marker = planted
    out = tmp_path / "run"
    checkpoint = _plant(out / CHECKPOINT_NAME, data)
    with pytest.raises(UnsafeFileError) as err:
        Checkpointer(checkpoint, "x").load()
    _assert_refused(str(err.value), checkpoint, marker)
    assert "delete it" in str(err.value)
    config = tiny_datasets["config"]
    with pytest.raises(UnsafeFileError) as err:  # through the training run, before any epoch
        train_run(
            TrainJob.local(
                tiny_datasets["ztf"],
                quick_split_file,
                out,
                model=model_spec(config, "cnn", "image"),
                training={**training_params(config, "cnn"), "epochs": 1, "patience": 1},
                seed=0,
            ),
            progress=False,
        )
    _assert_refused(str(err.value), checkpoint, marker)
    assert checkpoint.read_bytes() == data and not (out / "model.pt").exists()  # neither replaced nor used


def test_load_model_refuses_a_planted_model(planted, tmp_path):
    data, marker = planted
    path = _plant(tmp_path / "run" / "model.pt", data)
    with pytest.raises(UnsafeFileError) as err:
        load_model(path)
    _assert_refused(str(err.value), path, marker)
    assert "train the run again" in str(err.value)


def test_predict_refuses_a_planted_model(planted, tmp_path):
    """Through the command line, as a user runs it: exit status 1, the file named, nothing written."""
    data, marker = planted
    path = _plant(tmp_path / "run" / "model.pt", data)
    out = tmp_path / "scores.parquet"
    cli = [sys.executable, "-m", "alertvision", "predict", "-q", str(packet_paths()[0]), "--model", str(path)]
    done = subprocess.run([*cli, "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    _assert_refused(done.stderr, path, marker)
    assert not out.exists()


def test_export_refuses_a_planted_model(planted, tiny_datasets, quick_split_file, tmp_path):
    data, marker = planted
    path = _plant(tmp_path / "run" / "model.pt", data)
    with pytest.raises(UnsafeFileError) as err:
        export_run(tmp_path / "run", tiny_datasets["ztf"], quick_split_file, tmp_path / "export")
    _assert_refused(str(err.value), path, marker)
    assert not (tmp_path / "export").exists()


def test_planted_weights_are_refused_by_fetch_and_by_the_backbone_loader(planted, tmp_path):
    data, marker = planted
    src = tmp_path / "src"
    path = _plant(src / "pytorch_model.bin", data)
    (src / "config.json").write_bytes(_config())
    out = tmp_path / "out" / "w"
    with pytest.raises(WeightsInvalid) as err:  # fetch converts a pickled state dict to safetensors
        fetch_weights(ZOOBOT, out, local_dirs={ZOOBOT: str(src)}, allow_download=False)
    _assert_refused(str(err.value), path, marker)
    assert "fetch the weights again" in str(err.value) and not out.exists()
    with pytest.raises(WeightsInvalid) as err:  # a run reading a weights folder as it is
        load_pretrained_backbone(ResolvedWeights(ZOOBOT, str(src), "convnext_pico", "local_dirs"))
    _assert_refused(str(err.value), path, marker)


def test_a_saved_model_loads_and_a_truncated_one_says_truncated(tiny_config, tmp_path):
    arch = tiny_config["archs"]["cnn"]
    torch.manual_seed(0)
    model = build_model(arch, HEAD).eval()
    # NumPy values (a sweep's hyperparameters, say) are saved as Python numbers and lists
    info = {"arch": "cnn", "seed": np.int64(0), "weight_id": None, "hp": {"lr": np.float64(3e-4), "w": np.arange(2)}}
    save_model(model, tmp_path / "model.pt", spec=arch, head_cfg=HEAD, info=info)
    loaded, loaded_info = load_model(tmp_path / "model.pt")  # what save_model writes is plain data
    assert loaded_info == {"arch": "cnn", "seed": 0, "weight_id": None, "hp": {"lr": 3e-4, "w": [0, 1]}}
    assert type(loaded_info["seed"]) is int and type(loaded_info["hp"]["lr"]) is float
    x = torch.randn(2, 3, 63, 63)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    whole = (tmp_path / "model.pt").read_bytes()
    cut = _plant(tmp_path / "cut" / "model.pt", whole[: len(whole) // 2])
    with pytest.raises(TruncatedFileError) as err:
        load_model(cut)
    assert str(cut) in str(err.value) and "truncated" in str(err.value) and "train the run again" in str(err.value)
