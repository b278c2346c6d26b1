"""Config validation: defaults filled, bad values stop naming the key, the grid."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from alertvision.config import ConfigError, grid_cells, load_config, parse_yaml, shadowed_settings, validate_config
from alertvision.study.jobs import figure3_policies, training_params
from alertvision.study.plan import weight_id

REPO = Path(__file__).resolve().parents[2]


def test_embedded_default_validates_with_defaults():
    config = load_config(REPO / "config" / "config.yaml")
    assert config["data"]["source"] == "synthetic"
    assert config["splits"]["probabilities"] == [0.81, 0.09, 0.10]
    assert config["archs"]["cnn"]["conv_kernel"] == 5
    assert training_params(config, "maxvit")["epochs"] == 3
    cells = list(grid_cells(config, "image"))
    # datasets x fractions x (cnn, convnext, maxvit from random init + convnext, maxvit pre-trained here),
    # and on LSST also convnext, maxvit from the ZTF runs' encoders (regimen ztf)
    assert len(cells) == 3 * 4 * (3 + 2) + 4 * 2
    assert {c["dataset"] for c in cells if c["regimen"] == "ztf"} == {"lsst"}
    assert {c["regimen"] for c in cells if c["arch"] == "cnn"} == {"none"}
    # Figure 3: ZTF only, the same pairs plus the metadata-only model
    assert len(list(grid_cells(config, "multimodal"))) == 4 * (3 + 2 + 1) == len(list(grid_cells(config))) - len(cells)
    assert weight_id(config, "synthgalaxy", "maxvit") == "local-dir:resources/weights/synthgalaxy/maxvit"


def test_pretrain_regimen_checks():
    base = {"grid": {"regimens": ["none", "sg"]}}
    with pytest.raises(ConfigError, match="regimens.sg: give `weights`, `pretrain` or `transfer`"):
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


def test_a_key_given_twice_is_refused_naming_the_key_and_its_lines(tmp_path):
    """Before, YAML kept the last of two `epochs` silently: the file's value was lost."""
    path = tmp_path / "study.yaml"
    path.write_text("training:\n  epochs: 2\n  lr: 0.001\n  epochs: 9\n")
    with pytest.raises(
        ConfigError, match=rf"config file {path}, line 4: key 'epochs' is given twice \(first on line 2\)"
    ):
        load_config(path)
    path.write_text("grid: {archs: [cnn], archs: [maxvit]}\n")  # flow style too
    with pytest.raises(ConfigError, match="line 1: key 'archs' is given twice"):
        load_config(path)
    path.write_text("base: &b {epochs: 2}\ntraining:\n  <<: *b\n  epochs: 4\n")  # a merge key may be overridden
    assert parse_yaml(path.read_text())["training"] == {"epochs": 4}
    with pytest.raises(ConfigError, match=r"--set training, line 1: key 'epochs' is given twice"):
        parse_yaml("{epochs: 1, epochs: 2}", "--set training")
    path = tmp_path / "study.json"  # Snakemake reads a config file as JSON first
    path.write_text('{"training": {"epochs": 2}, "grid": {"seeds": [0]}}')
    assert load_config(path)["training"]["epochs"] == 2
    path.write_text('{"training": {"epochs": 2,\n\t"epochs": 6}}')
    with pytest.raises(ConfigError, match=rf"config file {path}: key 'epochs' is given twice"):
        load_config(path)


def _seed_paths(node, path=()):
    """Every key of the schema named seed or seeds, as (path, schema of the integer)."""
    for key, sub in (node.get("properties") or {}).items():
        if key in ("seed", "seeds"):
            yield (*path, key), sub.get("items", sub)
        yield from _seed_paths(sub, (*path, key))
    if isinstance(node.get("items"), dict):
        yield from _seed_paths(node["items"], (*path, 0))
    if isinstance(node.get("additionalProperties"), dict):
        yield from _seed_paths(node["additionalProperties"], (*path, "*"))


def test_every_seed_is_bounded_by_what_numpy_accepts():
    """Before, a seed of 2**32 passed the check and every training job then failed in np.random.seed."""
    from alertvision.config import schema

    found = dict(_seed_paths(schema()))
    assert len(found) >= 9 and ("grid", "seeds") in found and ("sweep", "seed") in found
    for path, sub in found.items():
        assert sub.get("maximum") == 2**32 - 1, ".".join(map(str, path))
    for config, key in [
        ({"grid": {"seeds": [0, 2**32]}}, "grid.seeds.1"),
        ({"data": {"synthetic": {"seed": 2**32}}}, "data.synthetic.seed"),
        ({"splits": {"seed": 2**40}}, "splits.seed"),
        ({"sweep": {"seed": 2**32}}, "sweep.seed"),
        (
            {"archs": {"cnn": {"kind": "cnn", "sweep": {"seed": 2**32}}}, "grid": {"archs": ["cnn"]}},
            "archs.cnn.sweep.seed",
        ),
        ({"embed": {"umap": {"seed": 2**32}}}, "embed.umap.seed"),
    ]:
        with pytest.raises(ConfigError, match=f"config key {key}: .* is greater than the maximum"):
            validate_config(config)
    assert validate_config({"grid": {"seeds": [2**32 - 1]}})["grid"]["seeds"] == [2**32 - 1]


def test_a_storage_password_in_the_config_is_refused_naming_the_environment_variable():
    """Before, `--config sweep="{storage: postgresql://u:PW@host/db}"` ran, the password in Snakemake's log."""
    url = "postgresql+psycopg2://alertvision:s3cr3t@dbhost:5432/sweeps"
    for config, key in [
        ({"sweep": {"storage": url}}, "sweep.storage"),
        ({"sweep": {"storage": "postgresql://dbhost/sweeps?user=a&password=s3cr3t"}}, "sweep.storage"),
        (
            {"archs": {"cnn": {"kind": "cnn", "sweep": {"storage": url}}}, "grid": {"archs": ["cnn"]}},
            "archs.cnn.sweep.storage",
        ),
    ]:
        with pytest.raises(ConfigError, match=f"config key {key}: the URL holds a password") as err:
            validate_config(config)
        assert "environment variable ALERTVISION_SWEEP_STORAGE" in str(err.value) and "s3cr3t" not in str(err.value)
    with pytest.raises(ConfigError, match="environment variable MY_DB instead"):
        validate_config({"sweep": {"storage": url, "storage_env": "MY_DB"}})
    # a URL without a password (a .pgpass file, a socket, SQLite) is fine
    for fine in ("postgresql://alertvision@dbhost:5432/sweeps", "sqlite:///sweeps.db", None):
        assert validate_config({"sweep": {"storage": fine}})["sweep"]["storage"] == fine


def test_a_command_line_value_shadowed_by_an_architecture_s_key_is_named(caplog):
    """Before, `--set training.epochs=1` was silently ignored for the CNN: archs.cnn.training.epochs won."""
    with caplog.at_level("WARNING", logger="alertvision.config"):
        config = load_config(REPO / "config" / "config.yaml", {"training.epochs": 1, "sweep.trials": 2})
    assert training_params(config, "cnn")["epochs"] == 12 and training_params(config, "convnext")["epochs"] == 1
    warned = [r.getMessage() for r in caplog.records]
    assert (
        "--set training.epochs=1 does not apply to the cnn runs: archs.cnn.training.epochs=12 overrides it; "
        "set archs.cnn.training.epochs to change those runs" in warned
    )
    assert any("metadata-only runs: multimodal.metadata_training.epochs=" in w for w in warned)
    assert not any("convnext" in w or "sweep.trials" in w for w in warned)  # nothing shadows those
    # the specific key set too, or a key no architecture overrides: nothing to say
    assert shadowed_settings(config, {"training.epochs": 1, "archs.cnn.training.epochs": 1}, "--set") == [
        m for m in shadowed_settings(config, {"training.epochs": 1}, "--set") if "cnn runs" not in m
    ]
    assert shadowed_settings(config, {"training": {"warmup_epochs": 2}}, "--config") == []
    user = {"sweep": {"pruner": {"kind": "hyperband", "warmup_epochs": 2}}}
    swept = validate_config(
        {"grid": {"archs": ["cnn"]}, "archs": {"cnn": {"kind": "cnn", "sweep": {"pruner": {"kind": "median"}}}}, **user}
    )
    assert shadowed_settings(swept, user, "--config") == [
        "--config sweep.pruner.kind='hyperband' does not apply to the cnn runs: archs.cnn.sweep.pruner.kind='median' "
        "overrides it; set archs.cnn.sweep.pruner.kind to change those runs"
    ]


@pytest.mark.parametrize("survey", ["lsst", "ztf"])
def test_data_survey_is_refused_saying_what_to_do_instead(survey):
    with pytest.raises(ConfigError, match="config key data.survey: removed") as err:
        validate_config({"data": {"survey": survey}})
    assert "add lsst to grid.datasets" in str(err.value) and "data.lsst.source" in str(err.value)


def test_lsst_is_a_dataset_of_the_grid_with_its_own_source():
    config = validate_config({"grid": {"datasets": ["ztf", "lsst"]}})
    assert config["grid"]["datasets"] == ["ztf", "lsst"]
    assert config["data"]["lsst"]["source"] == "synthetic"
    assert config["data"]["lsst"]["avro"] == {"path": None, "labels": None}
    assert "survey" not in config["data"] and validate_config({})["grid"]["datasets"] == ["ztf", "ls"]
    # real Rubin packets need both keys, named in the error; a study without the lsst dataset never reads them
    avro = {"data": {"lsst": {"source": "avro", "avro": {"path": "packets/"}}}}
    with pytest.raises(ConfigError, match="config key data.lsst.avro: data.lsst.source 'avro' needs"):
        validate_config({**avro, "grid": {"datasets": ["lsst"]}})
    assert validate_config({**avro, "grid": {"datasets": ["ztf"]}})["data"]["lsst"]["source"] == "avro"
