"""BTSbot's training recipe as the configs give it: epochs and patience, float32 (docs/fidelity.md, "Training")."""

from __future__ import annotations

import json

import torch

from alertvision.config import grid_cells, load_config
from alertvision.models import load_model
from alertvision.study.jobs import TrainJob, model_spec, training_params
from alertvision.training.loop import train_run


def test_the_study_trains_every_model_up_to_1000_epochs_with_patience_75():
    """prod_config.json: 1000 epochs, patience 75, for every cell of the study (image, multi-modal, metadata only)."""
    study = load_config("config/study.yaml")
    cells = list(grid_cells(study))
    assert {c["arch"] for c in cells} == {"cnn", "convnext", "maxvit", "none"}
    for cell in cells:
        params = training_params(study, cell["arch"], cell["modality"])
        assert (params["epochs"], params["patience"], params["min_improvement"]) == (1000, 75, 0.005), cell
        assert params["start_from_epoch"] == 0  # every epoch a candidate, as btsbot/train.py
    # the embedded default trains for minutes on a laptop: 3-12 epochs (60 for the metadata-only model)
    embedded = load_config()
    budgets = {
        (c["arch"], c["modality"]): training_params(embedded, c["arch"], c["modality"]) for c in grid_cells(embedded)
    }
    assert {k: (p["epochs"], p["patience"]) for k, p in budgets.items() if k[0] != "none"} == {
        ("cnn", "image"): (12, 5),
        ("convnext", "image"): (6, 3),
        ("maxvit", "image"): (3, 3),
        ("cnn", "multimodal"): (12, 5),
        ("convnext", "multimodal"): (6, 3),
        ("maxvit", "multimodal"): (3, 3),
    }
    assert (budgets["none", "multimodal"]["epochs"], budgets["none", "multimodal"]["patience"]) == (60, 10)


def test_training_is_float32_and_bf16_only_on_cuda(tiny_datasets, quick_split_file, tmp_path):
    """BTSbot trains in float32 (``bf16: false`` in the study); bf16 autocast is a CUDA production option, so
    asking for it on the CPU still trains in float32, and metrics.json says which ran."""
    study = load_config("config/study.yaml")
    assert not any(training_params(study, c["arch"], c["modality"])["bf16"] for c in grid_cells(study))
    config = tiny_datasets["config"]
    dtypes: set[torch.dtype] = set()

    def record(module, inputs, output):
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            dtypes.add(output.dtype)

    for bf16 in (False, True):
        training = {**training_params(config, "cnn"), "epochs": 1, "patience": 1, "bf16": bf16, "device": "cpu"}
        handle = torch.nn.modules.module.register_module_forward_hook(record)
        try:
            metrics = train_run(
                TrainJob.local(
                    tiny_datasets["ztf"],
                    quick_split_file,
                    tmp_path / str(bf16),
                    model=model_spec(config, "cnn", "image"),
                    training=training,
                    seed=0,
                ),
                progress=False,
            )
        finally:
            handle.remove()
        assert dtypes == {torch.float32} and metrics["bf16"] is False
        assert json.loads((tmp_path / str(bf16) / "metrics.json").read_text())["bf16"] is False
        model, _ = load_model(tmp_path / str(bf16) / "model.pt")
        assert {v.dtype for v in model.state_dict().values() if v.is_floating_point()} == {torch.float32}


def test_a_sweep_maximises_the_validation_roc_auc_of_the_kept_epoch(
    tiny_datasets, quick_split_file, tmp_path, monkeypatch
):
    """sweep.objective val_roc_auc (the default): each trial's value is the validation ROC AUC of the epoch the
    training keeps (lowest validation loss), and the best trial is the largest; val_loss is minimised."""
    import optuna
    import pandas as pd

    from alertvision.config import schema
    from alertvision.sweeps import sweep_finalize, sweep_run
    from alertvision.sweeps.objective import direction
    from alertvision.sweeps.storage import JOURNAL_FILE, make_storage

    monkeypatch.delenv("ALERTVISION_SWEEP_STORAGE", raising=False)
    assert schema()["properties"]["sweep"]["properties"]["objective"]["default"] == "val_roc_auc"
    assert (direction("val_roc_auc"), direction("val_loss")) == ("maximize", "minimize")
    config = tiny_datasets["config"]
    training = {**training_params(config, "none", "multimodal"), "epochs": 2, "patience": 2}
    sweep_cfg = {"trials": 3, "seed": 0, "startup_trials": 3}
    name = "alertvision/ztf/multimodal/none/none/f10"
    spec = model_spec(config, "none", "multimodal").with_values(metadata_fill="median")
    job = TrainJob.local(tiny_datasets["ztf"], quick_split_file, None, model=spec, training=training, seed=0)
    sweep_run(job, tmp_path, sweep_cfg=sweep_cfg, study_name=name, progress=False)
    best = sweep_finalize(tmp_path, study_name=name, training=training, sweep_cfg=sweep_cfg, modality="multimodal")
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert best["direction"] == "maximize" and best["objective"] == "val_roc_auc"
    assert best["value"] == trials["value"].max()
    study = optuna.load_study(study_name=name, storage=make_storage(str(tmp_path / JOURNAL_FILE)))
    assert [t.value for t in study.trials] == [t.user_attrs["metrics"]["val_roc_auc_best"] for t in study.trials]
