"""Config validation: defaults filled, bad values stop naming the key, the grid."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from alertvision.config import (
    ConfigError,
    figure3_policies,
    grid_cells,
    load_config,
    training_params,
    validate_config,
    weight_id,
)

REPO = Path(__file__).resolve().parents[2]


def test_embedded_default_validates_with_defaults():
    config = load_config(REPO / "config" / "config.yaml")
    assert config["data"]["source"] == "synthetic"
    assert config["splits"]["probabilities"] == [0.81, 0.09, 0.10]
    assert config["archs"]["cnn"]["conv_kernel"] == 5
    assert training_params(config, "maxvit")["epochs"] == 3
    cells = list(grid_cells(config, "image"))
    # datasets x fractions x (cnn, convnext, maxvit from random init + convnext, maxvit pre-trained here)
    assert len(cells) == 2 * 4 * (3 + 2)
    assert {c["regimen"] for c in cells if c["arch"] == "cnn"} == {"none"}
    # Figure 3: ZTF only, the same pairs plus the metadata-only model
    assert len(list(grid_cells(config, "multimodal"))) == 4 * (3 + 2 + 1) == len(list(grid_cells(config))) - len(cells)
    assert weight_id(config, "synthgalaxy", "maxvit") == "local-dir:resources/weights/synthgalaxy/maxvit"


def test_pretrain_regimen_checks():
    base = {"grid": {"regimens": ["none", "sg"]}}
    with pytest.raises(ConfigError, match="regimens.sg: give `weights` or `pretrain`"):
        validate_config({**base, "regimens": {"none": {}, "sg": {"weights": {"convnext": "x"}, "pretrain": {}}}})
    with pytest.raises(ConfigError, match="regimens.sg.pretrain.archs: 'cnn'"):
        validate_config({**base, "regimens": {"none": {}, "sg": {"pretrain": {"archs": ["cnn"]}}}})
    with pytest.raises(ConfigError, match="regimens.sg.pretrain.corpus.path"):
        validate_config({**base, "regimens": {"none": {}, "sg": {"pretrain": {"corpus": {"source": "folder"}}}}})
    config = validate_config({**base, "regimens": {"none": {}, "sg": {"pretrain": {"archs": ["maxvit"]}}}})
    assert [c["arch"] for c in grid_cells(config) if c["regimen"] == "sg"] == ["maxvit"] * 8


@pytest.mark.parametrize(
    "override, key",
    [
        ({"training": {"epochs": 0}}, "training.epochs"),
        ({"training": {"lr": "fast"}}, "training.lr"),
        ({"data": {"synthetic": {"n_sources": 2}}}, "data.synthetic.n_sources"),
        ({"grid": {"archs": ["resnet"]}}, "grid.archs"),
        ({"grid": {"fractions": [0]}}, "grid.fractions"),
        ({"splits": {"probabilities": [0.5, 0.2, 0.2]}}, "splits.probabilities"),
        (
            {
                "archs": {"maxvit": {"kind": "timm", "timm_name": "maxvit_tiny_rw_224", "input_size": 63}},
                "grid": {"archs": ["maxvit"]},
            },
            "archs.maxvit.input_size",
        ),
        ({"tranining": {}}, "(top level)"),
        ({"legacysurvey": {"product": "png"}}, "legacysurvey.product"),
        ({"legacysurvey": {"channels": ["g", "g", "z"]}}, "legacysurvey.channels"),
        ({"legacysurvey": {"channels": ["g", "r", "i"]}}, "legacysurvey.channels.2"),
        ({"legacysurvey": {"jpeg_blank_value": 256}}, "legacysurvey.jpeg_blank_value"),
    ],
)
def test_bad_value_names_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        validate_config(copy.deepcopy(override))
    assert f"config key {key}" in str(err.value)


def test_regimens_only_train_the_archs_they_list():
    config = validate_config({"grid": {"regimens": ["none", "imagenet"]}})
    cells = {(c["arch"], c["regimen"]) for c in grid_cells(config)}
    assert ("cnn", "imagenet") not in cells
    assert {("convnext", "imagenet"), ("maxvit", "imagenet"), ("cnn", "none")} <= cells


def test_strings_from_the_snakemake_command_line_are_read_as_yaml():
    # `snakemake --config training="{epochs: 2}"` hands nested values over as strings
    config = validate_config(
        {"training": {"epochs": "2", "bf16": "true", "lr": "1e-4"}, "grid": {"fractions": ["5", "50"]}}
    )
    assert config["training"]["epochs"] == 2 and config["training"]["bf16"] is True
    assert config["training"]["lr"] == 1e-4 and config["grid"]["fractions"] == [5, 50]
    with pytest.raises(ConfigError, match="training.epochs"):
        validate_config({"training": {"epochs": "two"}})
    config = validate_config(
        {"archs": {"cnn": {"kind": "cnn", "training": {"epochs": "2"}}}, "grid": {"archs": ["cnn"]}}
    )
    assert config["archs"]["cnn"]["training"]["epochs"] == 2


def test_architecture_training_overrides_are_checked():
    with pytest.raises(ConfigError, match="config key archs.cnn.training.epochs: 0 is less than"):
        validate_config({"archs": {"cnn": {"kind": "cnn", "training": {"epochs": 0}}}, "grid": {"archs": ["cnn"]}})
    with pytest.raises(ConfigError, match="config key archs.cnn.training.*'epoch' was unexpected"):
        validate_config({"archs": {"cnn": {"kind": "cnn", "training": {"epoch": 3}}}, "grid": {"archs": ["cnn"]}})


def test_legacysurvey_product_defaults_and_checks():
    ls = validate_config({})["legacysurvey"]
    assert (ls["product"], ls["channels"], ls["jpeg_blank_value"], ls["normalise"]) == (
        "fits",
        ["z", "r", "g"],
        32,
        "l2",
    )
    assert ls["viewer"]["jpeg_url"] == "https://www.legacysurvey.org/viewer/jpeg-cutout"
    assert ls["viewer"]["jpeg_bands"] == "griy"
    study = load_config(REPO / "config" / "study.yaml")["legacysurvey"]
    assert (study["source"], study["product"], study["normalise"], study["channels"]) == (
        "viewer",
        "jpeg",
        "none",
        ["z", "r", "g"],
    )
    # no synthetic JPEGs: the error names the key, with or without the ls dataset in the grid
    for grid in ({}, {"datasets": ["ztf"]}):
        with pytest.raises(ConfigError, match="config key legacysurvey.product: 'jpeg' images come from the viewer"):
            validate_config({"legacysurvey": {"product": "jpeg"}, "grid": grid})
    viewer_jpeg = {"source": "viewer", "product": "jpeg"}
    with pytest.raises(ConfigError, match=r"config key legacysurvey.channels: \['g', 'r', 'z'\] applies to product"):
        validate_config({"legacysurvey": {**viewer_jpeg, "channels": ["g", "r", "z"]}})
    ls = validate_config({"legacysurvey": {**viewer_jpeg, "viewer": {"jpeg_bands": None}}})["legacysurvey"]
    assert ls["viewer"]["jpeg_bands"] is None
    fits = validate_config({"legacysurvey": {"channels": ["g", "r", "z"]}})["legacysurvey"]
    assert fits["channels"] == ["g", "r", "z"]


@pytest.mark.parametrize(
    "fractions, message",
    [
        ([1e-05, 100], "1e-05 would name its runs f1e-05; fractions are percentages"),
        ([33.33331, 33.33332], "33.33331 and 33.33332 are the same fraction at six significant digits"),
    ],
)
def test_fractions_that_cannot_name_a_folder_are_config_errors(fractions, message):
    """Before: a MissingInputException for 1e-05, and two fractions silently merged into one run."""
    with pytest.raises(ConfigError, match=message):
        validate_config({"grid": {"fractions": fractions}})


def test_a_typo_in_a_regimen_s_architecture_is_a_config_error():
    """Before, `weights: {convnxt: ...}` silently trained nothing for the regimen."""
    with pytest.raises(ConfigError, match="regimens.imagenet.weights.convnxt: 'convnxt' is not an architecture"):
        validate_config(
            {
                "grid": {"regimens": ["none", "imagenet"]},
                "regimens": {"none": {"weights": {}}, "imagenet": {"weights": {"convnxt": "convnext_pico.d1_in1k"}}},
            }
        )
    # a regimen the grid does not train may name architectures the config leaves out
    validate_config({"grid": {"archs": ["cnn"]}, "archs": {"cnn": {"kind": "cnn"}}})


def test_figure3_policies_are_a_name_or_a_list():
    assert figure3_policies(validate_config({})) == ["bts_p1", "bts_p2", "prod_p1", "prod_p2"]
    assert figure3_policies(validate_config({"policies": {"figure3": "prod_p2"}})) == ["prod_p2"]
    chosen = validate_config({"policies": {"figure3": ["prod_p1", "bts_p1"]}})
    assert figure3_policies(chosen) == ["prod_p1", "bts_p1"]
    for bad in ("prod_p3", ["bts_p1", "bts_p1"], [], ["bts_p1", "prod"]):
        with pytest.raises(ConfigError, match="config key policies.figure3"):
            validate_config({"policies": {"figure3": bad}})


def test_benchmark_times_the_whole_test_split_in_the_study_config():
    default = validate_config({})["benchmark"]
    assert (default["min_alerts"], default["gpu_min_alerts"], default["cpu_threads"]) == (1024, 16384, 2)
    study = load_config(REPO / "config" / "study.yaml")
    assert study["benchmark"]["cpu_threads"] == 12
    assert study["benchmark"]["min_alerts"] is None and study["benchmark"]["gpu_min_alerts"] is None
    assert figure3_policies(study) == ["bts_p1", "bts_p2", "prod_p1", "prod_p2"]
    # `snakemake --config benchmark="{min_alerts: null}"` hands the value over as a string
    assert validate_config({"benchmark": {"min_alerts": "null"}})["benchmark"]["min_alerts"] is None
    with pytest.raises(ConfigError, match="benchmark.gpu_min_alerts"):
        validate_config({"benchmark": {"gpu_min_alerts": 0}})
