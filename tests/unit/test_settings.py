"""Typed settings: built from the validated config, defaults from the schema only, frozen."""

from __future__ import annotations

import dataclasses

import pytest

from alertvision.config import schema
from alertvision.settings import (
    HeadSettings,
    PrunerSettings,
    SplitSettings,
    TrainingSettings,
    with_schema_defaults,
)
from alertvision.study.jobs import training_params


def test_training_and_head_settings_split_one_block(tiny_config):
    params = training_params(tiny_config, "convnext", "multimodal")
    training, head = TrainingSettings.from_config(params), HeadSettings.from_config(params)
    assert training.epochs == 3 and training.lr == pytest.approx(3e-4) and isinstance(training.betas, tuple)
    assert not {f.name for f in dataclasses.fields(training)} & {"dense1", "dense2", "dropout", "meta_dense1"}
    assert head.metadata is not None and head.as_dict(with_metadata=True)["meta_dense1"] == params["meta_dense1"]
    image_head = HeadSettings.from_config(training_params(tiny_config, "cnn"))
    assert image_head.metadata is None and image_head.dense1 == 8  # the CNN's own head default (schema)
    with pytest.raises(ValueError, match="meta_dense1"):
        image_head.as_dict(with_metadata=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        training.epochs = 5  # type: ignore[misc]


def test_a_block_missing_a_key_names_it():
    with pytest.raises(KeyError, match="training: .*eval_batch_size.* missing; build settings from a validated"):
        TrainingSettings.from_config({"epochs": 1})


def test_partial_blocks_take_exactly_the_schema_defaults():
    """The classes hold no defaults: a left-out key gets what the schema says, whatever that is."""
    props = schema()["properties"]
    splits = SplitSettings.from_block({"seed": 7})
    assert splits.seed == 7
    for name in ("max_alerts_per_source", "fraction_sampling", "fraction_eval"):
        assert getattr(splits, name) == props["splits"]["properties"][name]["default"]
    assert splits.latest_subsets == tuple(props["splits"]["properties"]["latest_subsets"]["default"])
    pruner = PrunerSettings.from_block("median")
    defaults = props["sweep"]["properties"]["pruner"]["properties"]
    assert (pruner.kind, pruner.startup_trials, pruner.warmup_epochs, pruner.reduction_factor) == (
        "median",
        defaults["startup_trials"]["default"],
        defaults["warmup_epochs"]["default"],
        defaults["reduction_factor"]["default"],
    )
    assert PrunerSettings.from_block(None).kind == "none"
    assert with_schema_defaults({}, "sweep")["storage_env"] == props["sweep"]["properties"]["storage_env"]["default"]
