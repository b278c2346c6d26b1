"""Transfer from ZTF as a pre-training regimen: the choice on the validation split only, the weights folder
and its provenance, the grid cells it trains, the config's checks."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_CONFIG, quick_run

from alertvision.config import ConfigError, validate_config
from alertvision.models import load_model
from alertvision.models.fetch import SOURCE_FILE
from alertvision.study.jobs import model_spec, train_job, training_params
from alertvision.study.plan import Run, grid_cells, transfer_candidates, weight_id
from alertvision.study.steps import weights_from_folder
from alertvision.training.loop import build_run_model
from alertvision.training.transfer import choose_source_run, write_transfer_weights


def _metrics(folder: Path, val: float | None, test: float, **identity) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "metrics.json"
    path.write_text(json.dumps({"val_roc_auc_best": val, "test_roc_auc": test, **identity}))
    return path


def test_the_source_run_is_chosen_on_the_validation_split_only(tmp_path):
    files = [
        _metrics(tmp_path / "a", 0.70, 0.99, seed=0),  # the best test score: not chosen
        _metrics(tmp_path / "b", 0.90, 0.10, seed=1),  # the best validation score: chosen
        _metrics(tmp_path / "c", 0.90, 0.50, seed=2),  # a tie: the first of equals is kept
        _metrics(tmp_path / "d", None, 1.00, seed=3),  # no finite validation score: never chosen
    ]
    chosen, candidates = choose_source_run(files)
    assert chosen == tmp_path / "b"
    assert [c["val_roc_auc_best"] for c in candidates] == [0.70, 0.90, 0.90, None]
    # the test scores may change as they like: the choice does not
    for f, test in zip(files, (0.0, 1.0, 0.2, 0.3)):
        data = json.loads(f.read_text())
        f.write_text(json.dumps({**data, "test_roc_auc": test}))
    assert choose_source_run(files)[0] == tmp_path / "b"
    with pytest.raises(ValueError, match="no candidate run has a finite val_roc_auc_best"):
        choose_source_run([files[-1]])


def _transfer_config(**transfer) -> dict:
    config = copy.deepcopy(TINY_CONFIG)
    config["grid"].update(datasets=["ztf", "lsst"], regimens=["none", "ztf"], fractions=[50, 100], seeds=[0, 1])
    config["regimens"] = {"none": {"weights": {}}, "ztf": {"transfer": {"from": "ztf", **transfer}}}
    return dict(validate_config(config))


def test_the_ztf_regimen_trains_timm_models_on_lsst_only_from_the_largest_ztf_image_runs():
    config = _transfer_config()
    cells = list(grid_cells(config))
    transferred = {(c["dataset"], c["arch"]) for c in cells if c["regimen"] == "ztf"}
    assert transferred == {("lsst", "convnext"), ("lsst", "maxvit")}  # timm only, on LSST only
    assert {c["dataset"] for c in cells if c["regimen"] == "none"} == {"ztf", "lsst"}
    candidates = transfer_candidates(config, "ztf", "convnext")
    assert candidates == [
        Run("ztf", "image", "convnext", "none", "100", 0),
        Run("ztf", "image", "convnext", "none", "100", 1),
    ]
    assert weight_id(config, "ztf", "convnext") == "local-dir:resources/weights/ztf/convnext"
    job = train_job(config, Run("lsst", "image", "convnext", "ztf", "50", 0))
    assert job.weights_dir == "resources/weights/ztf/convnext" and job.inputs()["weights"] == job.weights_dir
    assert transfer_candidates(_transfer_config(fraction=50), "ztf", "maxvit")[0].fraction == "50"


def test_every_regimen_on_lsst_reads_the_same_input():
    """One input for all regimens, as the paper's comparison: the same dataset files, the same stamp size,
    scale and input transform in the model spec; only the weights differ."""
    config = _transfer_config()
    jobs = [train_job(config, Run("lsst", "image", "convnext", r, "100", 0)) for r in ("none", "ztf")]
    inputs = [{k: v for k, v in job.inputs().items() if k != "weights"} for job in jobs]
    assert inputs[0] == inputs[1] and inputs[0]["images"] == "results/data/lsst/images.npy"
    specs = [job.model for job in jobs]
    assert [(s.image_size, s.scale, s.norm) for s in specs] == [(63, 63.0, "l2")] * 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"regimens": {"ztf": {"transfer": {"from": "ztf"}, "weights": {"convnext": "x"}}}}, "has no `weights`"),
        ({"regimens": {"ztf": {"transfer": {"from": "ztf", "fraction": 7}}}}, "is not one of grid.fractions"),
        ({"regimens": {"ztf": {"transfer": {"from": "ztf", "regimens": ["ztf"]}}}}, "transfer regimens cannot"),
        ({"grid": {"datasets": ["lsst"]}}, "trains none"),
    ],
)
def test_a_transfer_regimen_the_grid_cannot_train_is_refused(change, message):
    config = copy.deepcopy(TINY_CONFIG)
    config["grid"].update(datasets=["ztf", "lsst"], regimens=["none", "ztf"])
    config["regimens"] = {"none": {"weights": {}}, "ztf": {"transfer": {"from": "ztf"}}}
    for key, value in change.items():
        config[key] = {**config[key], **value}
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


@pytest.fixture(scope="module")
def two_runs(tiny_datasets, quick_split_file, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("transfer")
    return [quick_run(tiny_datasets, quick_split_file, root / name, "convnext", "image") for name in ("a", "b")]


def test_the_weights_are_the_chosen_runs_encoder_with_its_provenance(two_runs, tmp_path, tiny_datasets):
    metrics = [run / "metrics.json" for run in two_runs]
    scores = [json.loads(m.read_text())["val_roc_auc_best"] for m in metrics]
    record = write_transfer_weights(metrics, tmp_path / "ztf" / "convnext", weight_id="local-dir:x")
    chosen = two_runs[scores.index(max(scores))]
    source = json.loads((tmp_path / "ztf" / "convnext" / SOURCE_FILE).read_text())
    assert source["transfer"]["run"] == str(chosen) == record["transfer"]["run"]
    assert source["transfer"]["chosen_on"] == "validation split" and len(source["transfer"]["candidates"]) == 2
    assert len(source["transfer"]["config_digest"]) == 64
    # fine-tuning loads the encoder as it loads fetched weights: every backbone tensor the chosen run's
    weights = weights_from_folder(tmp_path / "ztf" / "convnext", "local-dir:x")
    assert weights.via == "transfer"
    config = tiny_datasets["config"]
    spec = model_spec(config, "convnext", "image")
    model = build_run_model(spec, training_params(config, "convnext", "image"), weights)
    trained, _ = load_model(chosen / "model.pt")
    for name, tensor in trained.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], tensor), name


def test_a_cnn_run_cannot_give_a_regimen_weights(tiny_datasets, quick_split_file, tmp_path):
    run = quick_run(tiny_datasets, quick_split_file, tmp_path / "cnn", "cnn", "image")
    with pytest.raises(ValueError, match="no timm backbone"):
        write_transfer_weights([run / "metrics.json"], tmp_path / "w", weight_id="local-dir:w")
    assert not (tmp_path / "w").exists()
