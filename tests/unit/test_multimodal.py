"""Multi-modal models: the metadata branch, the factory, the metadata checks, training, the sweep space."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from alertvision.config import ConfigError, grid_cells, validate_config
from alertvision.data.contract import open_dataset
from alertvision.data.features import METADATA_FEATURES
from alertvision.evaluation.policies import evaluate_policies
from alertvision.models import build_model, load_model, save_model
from alertvision.models.multimodal import MetadataBranch, MultimodalClassifier
from alertvision.study.jobs import TrainJob, model_spec, training_params
from alertvision.sweeps.space import METADATA_SPACE, search_space
from alertvision.training.loop import train_run
from alertvision.training.metadata import MetadataError, metadata_matrix

HEAD = {"dense1": 16, "dense2": 8, "dropout": 0.1, "meta_dense1": 12, "meta_dense2": 6, "meta_dropout": 0.1}
N_FEATURES = len(METADATA_FEATURES)


def _inputs(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 63, 63, generator=g) / 63, torch.randn(n, N_FEATURES, generator=g)


CNN = {
    "kind": "cnn",
    "input_size": 63,
    "conv1_channels": 4,
    "conv2_channels": 4,
    "conv_kernel": 3,
    "conv_dropout1": 0.1,
    "conv_dropout2": 0.1,
}


@pytest.mark.parametrize(
    "arch", [CNN, {"kind": "none"}, {"kind": "timm", "timm_name": "convnext_pico", "input_size": 63}]
)
def test_factory_builds_the_multimodal_model_of_every_kind(arch):
    torch.manual_seed(0)
    model = build_model({**arch, "modality": "multimodal"}, HEAD).eval()
    images, meta = _inputs()
    assert isinstance(model, MultimodalClassifier)
    assert model((images, meta)).shape == (4,) and model.embed((images, meta)).shape == (4, HEAD["dense2"])
    branch = model.metadata.body
    assert isinstance(branch[0], torch.nn.BatchNorm1d) and branch[0].num_features == N_FEATURES
    act = "GELU" if arch["kind"] == "timm" else "ReLU"  # BTSbot: ReLU beside its CNN and alone, GELU beside timm
    assert [type(m).__name__ for m in branch] == ["BatchNorm1d", "Linear", act, "Dropout", "Linear", act]
    backbone = 0 if model.backbone is None else model.backbone.num_features
    assert model.head.body[0].in_features == backbone + HEAD["meta_dense2"]  # fusion of both embeddings


def test_metadata_only_model_ignores_the_images():
    model = build_model({"kind": "none", "modality": "multimodal"}, HEAD).eval()
    images, meta = _inputs()
    assert torch.equal(model((None, meta)), model((images, meta)))
    assert torch.equal(model((images, meta)), model((images * 0, meta)))
    with pytest.raises(ValueError, match="only for modality 'multimodal'"):
        build_model({"kind": "none"}, HEAD)


def test_fill_values_replace_non_finite_features_inside_the_model():
    meta = torch.randn(3, N_FEATURES)
    meta[1, 4] = float("nan")
    meta[2, 7] = float("inf")
    fill = list(np.arange(N_FEATURES, dtype=float))
    filled = MetadataBranch(N_FEATURES, 8, 4, 0.0, fill).eval()
    expected = meta.clone()
    expected[1, 4], expected[2, 7] = 4.0, 7.0
    plain = MetadataBranch(N_FEATURES, 8, 4, 0.0).eval()
    plain.load_state_dict({**filled.state_dict(), "fill_values": torch.empty(0)})
    assert torch.allclose(filled(meta), plain(expected))
    assert torch.isnan(plain(meta)[1]).all()  # without a fill policy NaN would poison the batch


def test_multimodal_model_saves_and_loads_with_its_fill_values(tmp_path):
    spec = {**CNN, "modality": "multimodal"}
    fill = [float(i) / 10 for i in range(N_FEATURES)]
    model = build_model(spec, HEAD, metadata_fill=fill).eval()
    images, meta = _inputs()
    meta[0, 3] = float("nan")
    save_model(model, tmp_path / "model.pt", spec=spec, head_cfg={**HEAD, "lr": 1.0}, info={"arch": "cnn"})
    loaded, info = load_model(tmp_path / "model.pt")
    assert isinstance(loaded, MultimodalClassifier) and info == {"arch": "cnn"}
    assert torch.equal(loaded((images, meta)), model((images, meta)))
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["metadata_features"] == list(METADATA_FEATURES) and payload["metadata_fill"] == pytest.approx(fill)


def test_a_model_of_another_surveys_features_names_them_and_ztf_stays_as_it_was(tmp_path):
    spec = {**CNN, "modality": "multimodal"}
    images, meta = _inputs()
    # ZTF: naming its 25 features is building it as before, tensor for tensor and logit for logit
    torch.manual_seed(0)
    before = build_model(spec, HEAD).eval()
    torch.manual_seed(0)
    named = build_model(spec, HEAD, metadata_features=METADATA_FEATURES).eval()
    assert before.metadata.feature_names == METADATA_FEATURES
    assert all(torch.equal(a, b) for a, b in zip(before.state_dict().values(), named.state_dict().values()))
    assert torch.equal(before((images, meta)), named((images, meta)))
    # another survey's three features: a branch of three inputs, the names saved and read back
    names = ("psf_flux", "psf_mag", "snr")
    model = build_model(spec, HEAD, metadata_features=names, metadata_fill=[0.0, 1.0, 2.0]).eval()
    assert model.metadata.n_features == 3 and model.metadata.body[0].num_features == 3
    save_model(model, tmp_path / "model.pt", spec=spec, head_cfg=HEAD, info={})
    assert torch.load(tmp_path / "model.pt", weights_only=True)["metadata_features"] == list(names)
    loaded, _ = load_model(tmp_path / "model.pt")
    assert loaded.metadata.feature_names == names
    assert torch.equal(loaded((images, meta[:, :3])), model((images, meta[:, :3])))
    with pytest.raises(ValueError, match="n_features 25 but 3 metadata features"):
        build_model(spec, HEAD, n_features=25, metadata_features=names)
    unnamed = build_model(spec, HEAD, n_features=3)  # a branch of three unnamed features: not saved
    assert unnamed.metadata.n_features == 3 and unnamed.metadata.feature_names is None
    with pytest.raises(ValueError, match="3 metadata features are unnamed"):
        save_model(unnamed, tmp_path / "unnamed.pt", spec=spec, head_cfg=HEAD, info={})
    assert not (tmp_path / "unnamed.pt").exists()


def test_the_metadata_matrix_reads_the_features_it_is_given():
    alerts = _alerts().assign(psf_mag=np.arange(6, dtype=np.float32), snr=np.float32(np.nan))
    matrix, fill = metadata_matrix(alerts, np.arange(6), np.arange(4), "median", features=("psf_mag", "snr"))
    assert matrix.shape == (6, 2) and fill == [1.5, 0.0]
    with pytest.raises(MetadataError, match="feature 'snr' is nan"):
        metadata_matrix(alerts, np.arange(6), np.arange(4), features=("psf_mag", "snr"))
    with pytest.raises(MetadataError, match="lacks metadata feature.*band_index"):
        metadata_matrix(alerts, np.arange(6), np.arange(4), features=("psf_mag", "band_index"))


def _alerts(n=6):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(n, N_FEATURES)).astype(np.float32), columns=list(METADATA_FEATURES))
    df.insert(0, "alert_id", np.arange(100, 100 + n))
    df.insert(1, "objectId", [f"ZTF{i}" for i in range(n)])
    df.insert(2, "jd", 2459000.5 + np.arange(n))
    return df


def test_non_finite_metadata_stops_naming_the_column_and_the_alert():
    alerts = _alerts()
    alerts.loc[3, "distpsnr2"] = np.nan
    alerts.loc[4, "scorr"] = np.inf
    with pytest.raises(MetadataError, match=r"'distpsnr2' is nan for alert 103 of ZTF3.*'scorr': 1.*metadata_fill"):
        metadata_matrix(alerts, np.arange(6), np.arange(3))
    matrix, fill = metadata_matrix(alerts, np.arange(3), np.arange(3))  # rows the run does not read are not checked
    assert fill is None and matrix.shape == (6, N_FEATURES) and matrix.dtype == np.float32


def test_fill_policies_zero_and_train_median():
    alerts = _alerts()
    alerts.loc[0, "sky"] = np.nan
    _, zero = metadata_matrix(alerts, np.arange(6), np.arange(4), "zero")
    assert zero == [0.0] * N_FEATURES
    _, median = metadata_matrix(alerts, np.arange(6), np.arange(4), "median")
    j = METADATA_FEATURES.index("sky")
    assert median[j] == pytest.approx(float(np.median(alerts["sky"].iloc[1:4])))  # train rows only, finite only
    assert median[0] == pytest.approx(float(np.median(alerts["sgscore1"].iloc[:4])))
    with pytest.raises(ValueError, match="multimodal.metadata_fill"):
        metadata_matrix(alerts, np.arange(6), np.arange(4), "mean")


def _train(dataset, split_file, out, config, arch, **spec):
    training = {**training_params(config, arch, "multimodal"), "epochs": 2}
    return train_run(
        TrainJob.local(
            dataset,
            split_file,
            out,
            model=model_spec(config, arch, "multimodal").with_values(**spec),
            training=training,
            seed=0,
            info={"arch": arch, "modality": "multimodal"},
        ),
        progress=False,
    )


def test_multimodal_cnn_trains_and_scores_the_trigger_policies(tiny_datasets, split_file, tmp_path):
    config = tiny_datasets["config"]
    metrics = _train(tiny_datasets["ztf"], split_file, tmp_path, config, "cnn")
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["modality"] == "multimodal" and saved["metadata_fill"] == "error" and 0 <= saved["test_roc_auc"] <= 1
    assert "policies" not in saved and "policies" not in metrics  # the evaluation stage scores them
    predictions = pd.read_parquet(tmp_path / "predictions.parquet")
    bts = evaluate_policies(predictions)["bts_p1"]
    assert bts["n_included"] > 0 and len(bts["completeness_by_peak_mag"]) == 6
    alerts = open_dataset(tiny_datasets["ztf"]).alerts.set_index("alert_id")
    assert np.array_equal(predictions["magpsf"], alerts.loc[predictions["alert_id"], "magpsf"])
    model, _ = load_model(tmp_path / "model.pt")
    assert isinstance(model, MultimodalClassifier) and model.backbone is not None


def test_metadata_only_model_reads_no_image(tiny_datasets, split_file, tmp_path):
    """arch none trains on the features alone: its images.npy may be unreadable."""
    dataset = tmp_path / "ztf"
    shutil.copytree(tiny_datasets["ztf"], dataset)
    images = np.load(dataset / "images.npy", mmap_mode="r+")
    images[:] = np.nan  # any image read would turn the loss into NaN
    images.flush()
    del images
    metrics = _train(dataset, split_file, tmp_path / "run", tiny_datasets["config"], "none")
    assert np.isfinite(metrics["test_loss"]) and metrics["input_size"] is None and metrics["params"] < 20_000


def test_nan_feature_stops_the_run_unless_a_fill_policy_is_set(tiny_datasets, split_file, tmp_path):
    dataset = tmp_path / "ztf"
    shutil.copytree(tiny_datasets["ztf"], dataset)
    alerts = pd.read_parquet(dataset / "alerts.parquet")
    row = int(pd.read_parquet(split_file).query("split == 'train'")["row"].iloc[0])
    alerts.loc[row, "chinr"] = np.nan
    alerts.to_parquet(dataset / "alerts.parquet")
    config = tiny_datasets["config"]
    with pytest.raises(MetadataError, match=f"'chinr' is nan for alert {alerts.loc[row, 'alert_id']}"):
        _train(dataset, split_file, tmp_path / "a", config, "none")
    assert not (tmp_path / "a" / "metrics.json").exists()
    metrics = _train(dataset, split_file, tmp_path / "b", config, "none", metadata_fill="median")
    assert np.isfinite(metrics["test_loss"]) and metrics["metadata_fill"] == "median"


def test_metadata_branch_joins_the_search_space_of_multimodal_sweeps_only():
    assert set(METADATA_SPACE) <= set(search_space({}, "multimodal"))
    assert not set(METADATA_SPACE) & set(search_space({}, "image"))
    custom = {"search_space": {"meta_dense1": {"type": "categorical", "choices": [8]}, "meta_dropout": None}}
    assert search_space(custom, "multimodal")["meta_dense1"]["choices"] == [8]
    assert "meta_dropout" not in search_space(custom, "multimodal") and "meta_dense1" not in search_space(custom)


def _config(**grid):
    from conftest import TINY_CONFIG

    config = json.loads(json.dumps(TINY_CONFIG))
    config["grid"].update(modalities=["image", "multimodal"], **grid)
    return config


def test_grid_trains_multimodal_models_on_ztf_only_with_the_metadata_only_model():
    config = validate_config(_config())
    cells = list(grid_cells(config, "multimodal"))
    assert {c["dataset"] for c in cells} == {"ztf"}
    assert {c["arch"] for c in cells} == {"cnn", "convnext", "maxvit", "none"}
    assert {c["regimen"] for c in cells if c["arch"] == "none"} == {"none"}
    assert {c["dataset"] for c in grid_cells(config, "image")} == {"ztf", "ls"}
    limited = _config()
    limited["multimodal"] = {"archs": ["convnext"], "metadata_only": False}
    assert {c["arch"] for c in grid_cells(validate_config(limited), "multimodal")} == {"convnext"}
    limited["multimodal"]["metadata_training"] = {"epochs": 40, "lr": "0.01"}
    validated = validate_config(limited)
    assert training_params(validated, "none", "multimodal")["lr"] == 0.01  # read as YAML, checked like `training`
    assert training_params(validated, "cnn", "multimodal")["epochs"] == config["archs"]["cnn"]["training"]["epochs"]
    # the metadata branch's sizes belong to multi-modal runs only
    assert "meta_dense1" in training_params(config, "cnn", "multimodal")
    assert "meta_dense1" not in training_params(config, "cnn", "image")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"grid": {"datasets": ["ls"]}}, "multimodal models train on the ztf dataset only"),
        ({"grid": {"datasets": ["lsst"]}}, r"on the ztf dataset only \(ls and lsst get image runs\)"),
        ({"multimodal": {"archs": ["vit"]}}, "multimodal.archs: 'vit' is not defined"),
        ({"archs": {"none": {"kind": "cnn"}}}, "archs.none: the name 'none' is reserved"),
        ({"multimodal": {"metadata_training": {"epochs": 0}}}, "multimodal.metadata_training.epochs"),
    ],
)
def test_bad_multimodal_config_names_the_key(change, message):
    config = _config()
    for key, value in change.items():
        config.setdefault(key, {}).update(value)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_multimodal_sweep_samples_the_metadata_branch(tiny_datasets, split_file, tmp_path, monkeypatch):
    import yaml

    from alertvision.sweeps import sweep_finalize, sweep_run
    from alertvision.sweeps.space import TABLE1, UM_NN_ABSENT

    monkeypatch.delenv("ALERTVISION_SWEEP_STORAGE", raising=False)
    config = tiny_datasets["config"]
    training = {**training_params(config, "none", "multimodal"), "epochs": 1}
    sweep_cfg = {"trials": 2, "seed": 0, "search_space": {"lr": {"type": "categorical", "choices": [0.001]}}}
    name = "alertvision/ztf/multimodal/none/none/f100"
    report = sweep_run(
        TrainJob.local(
            tiny_datasets["ztf"],
            split_file,
            None,
            model=model_spec(config, "none", "multimodal"),
            training=training,
            seed=0,
        ),
        tmp_path,
        sweep_cfg=sweep_cfg,
        study_name=name,
        progress=False,
    )
    assert report["ran"] == [0, 1]
    best = sweep_finalize(
        tmp_path,
        study_name=name,
        training=training,
        sweep_cfg=sweep_cfg,
        modality="multimodal",
        model=model_spec(config, "none", "multimodal"),
    )
    # BTSbot's um_nn has no head layers for Table 1's dense1, dense2 and dropout to size
    assert set(best["params"]) == (set(TABLE1) - set(UM_NN_ABSENT)) | set(METADATA_SPACE)
    assert best["config"]["modality"] == "multimodal"
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert {"param_meta_dense1", "param_meta_dropout"} <= set(trials.columns)
    assert yaml.safe_load((tmp_path / "best.yaml").read_text())["params"]["meta_dense2"] in (8, 16, 32)


def test_a_last_training_batch_of_one_alert_is_skipped(tiny_datasets, split_file, tmp_path):
    """BatchNorm1d cannot train on one sample: a batch size leaving one alert over must still train."""
    n_train = int((pd.read_parquet(split_file)["split"] == "train").sum())
    config = tiny_datasets["config"]
    training = {**training_params(config, "none", "multimodal"), "epochs": 1, "batch_size": n_train - 1}
    metrics = train_run(
        TrainJob.local(
            tiny_datasets["ztf"],
            split_file,
            None,
            model=model_spec(config, "none", "multimodal"),
            training=training,
            seed=0,
        ),
        progress=False,
    )
    assert np.isfinite(metrics["val_loss_best"])
    from alertvision.training.data import Batches

    batches = Batches(None, np.arange(5), np.zeros(5), 2, shuffle=True, metadata=np.zeros((5, 3)), min_batch=2)
    sizes = [len(pos) for _, _, pos in batches]
    assert sizes == [2, 2] and len(batches) == 2


def test_figure3_cnn_baseline_is_btsbots_production_model_and_never_swept(tmp_path):
    """The paper's Figure 3 compares against "the baseline production BTSbot model": prod_config.json's
    mm_cnn (conv 32 / 64, kernel 5, dropouts 0.50 / 0.55, branch 128 / 128 with dropout 0.25, head Dense(8)
    with dropout 0.20, AdamW 1e-4 with betas 0.99 / 0.99, batch 64, 1000 epochs, patience 75), not a sweep
    of Table 1's space (in which Dense(8) alone and a 128-wide branch cannot occur)."""
    import argparse

    from alertvision.cli import _with_best
    from alertvision.config import load_config
    from alertvision.study.jobs import sweep_params, train_job
    from alertvision.study.plan import Layout, Run

    config = load_config("config/study.yaml")
    spec, training = model_spec(config, "cnn", "multimodal"), training_params(config, "cnn", "multimodal")
    assert {k: getattr(spec, k) for k in ("conv1_channels", "conv2_channels", "conv_kernel")} == {
        "conv1_channels": 32,
        "conv2_channels": 64,
        "conv_kernel": 5,
    }
    assert (spec.conv_dropout1, spec.conv_dropout2) == (0.50, 0.55)
    assert {k: training[k] for k in ("lr", "betas", "batch_size", "epochs", "patience")} == {
        "lr": 1e-4,
        "betas": [0.99, 0.99],
        "batch_size": 64,
        "epochs": 1000,
        "patience": 75,
    }
    assert {k: training[k] for k in ("dense1", "dense2", "dropout", "meta_dense1", "meta_dense2", "meta_dropout")} == {
        "dense1": 8,
        "dense2": None,
        "dropout": 0.20,
        "meta_dense1": 128,
        "meta_dense2": 128,
        "meta_dropout": 0.25,
    }
    assert sum(p.numel() for p in build_model(spec, training).parameters()) == 227_811  # BTSbot's mm_cnn
    # not swept: no best.yaml to wait for; every other configuration keeps its sweep
    assert sweep_params(config, "cnn", modality="multimodal")["trials"] == 0
    assert sweep_params(config, "cnn", modality="image")["trials"] == 50
    assert sweep_params(config, "convnext", modality="multimodal")["trials"] == 50
    assert sweep_params(config, "none", modality="multimodal")["trials"] == 50
    for modality in ("multimodal", "image"):
        args = argparse.Namespace(best=None, arch="cnn", modality=modality, results=str(tmp_path))
        job = train_job(config, Run("ztf", modality, "cnn", "none", "100", 0), Layout(results=str(tmp_path)))
        if modality == "multimodal":
            assert _with_best(args, job).best_yaml is None  # trains at once, with the production settings
        else:
            with pytest.raises(SystemExit, match="sweeps 'cnn'"):  # the image CNN waits for its sweep
                _with_best(args, job)
    # the switch keeps the swept variant: Table 1 and the CNN's space over the training block
    swept = load_config("config/study.yaml", {"multimodal.cnn_baseline": "swept"})
    assert sweep_params(swept, "cnn", modality="multimodal")["trials"] == 50
    assert training_params(swept, "cnn", "multimodal")["lr"] == swept["training"]["lr"] != 1e-4
