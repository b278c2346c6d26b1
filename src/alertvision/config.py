"""The study configuration: load, fill defaults from the schema, validate (a run's settings are worked out
from it by :mod:`alertvision.study.jobs`; the grid and the paths are the study plan's,
:mod:`alertvision.study.plan`)."""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, MutableMapping

import jsonschema

from alertvision.data.sources import check_sources
from alertvision.schema import ConfigError, parse_yaml, schema
from alertvision.study.plan import LAYOUT, METADATA_ONLY, MULTIMODAL, MULTIMODAL_DATASET, format_fraction, grid_cells

DEFAULT_CONFIG = Path("config") / "config.yaml"

log = logging.getLogger(__name__)


def load_yaml(path: str | os.PathLike) -> Any:
    """A config file read as Snakemake reads one: as JSON when it is JSON, else by :func:`parse_yaml`; a key
    given twice is refused either way."""
    path = Path(path)
    text, origin = path.read_text(encoding="utf-8"), f"config file {path}"
    try:
        return json.loads(text, object_pairs_hook=lambda pairs: _unique_pairs(pairs, origin))
    except json.JSONDecodeError:
        return parse_yaml(text, origin)


def _unique_pairs(pairs: list[tuple[str, Any]], origin: str) -> dict:
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise ConfigError(f"{origin}: key {key!r} is given twice in one object (JSON keeps the last): keep one")
    return dict(pairs)


def check_config_files(paths: Iterable[str | os.PathLike]) -> None:
    """Read every config file Snakemake loaded (``workflow.configfiles``) with :func:`load_yaml`, so that a
    key given twice stops the run as it stops the CLI (Snakemake's own loader keeps the last value)."""
    for path in paths:
        if Path(path).is_file():
            load_yaml(path)


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, sch):
        if isinstance(instance, MutableMapping):
            for key, sub in properties.items():
                if isinstance(sub, Mapping) and "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, sch)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft7Validator)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _types(sch: Mapping[str, Any]) -> set[str]:
    t = sch.get("type", [])
    return {t} if isinstance(t, str) else set(t)


def _coerce(instance: Any, sch: Mapping[str, Any]) -> Any:
    """Turn strings into the numbers / booleans / lists the schema asks for.

    ``snakemake --config training="{epochs: 2}"`` hands every nested value over as a string
    (Snakemake parses --config with YAML's base loader); this reads them as YAML scalars.
    """
    if isinstance(instance, str) and _types(sch) and "string" not in _types(sch):
        for parse in (int, float, parse_yaml):
            try:
                return parse(instance)
            except ValueError:  # ConfigError too
                continue
        return instance
    if isinstance(instance, MutableMapping):
        props = sch.get("properties", {})
        extra = sch.get("additionalProperties")
        for key in list(instance):
            sub = props.get(key, extra if isinstance(extra, Mapping) else None)
            if sub is not None:
                instance[key] = _coerce(instance[key], sub)
    elif isinstance(instance, list) and isinstance(sch.get("items"), Mapping):
        return [_coerce(item, sch["items"]) for item in instance]
    return instance


def validate_config(config: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Fill defaults in place and check ``config``; raise :class:`ConfigError` naming the bad key."""
    sch = schema()
    _check_no_survey_key(config)
    _coerce(config, sch)
    validator = _Validator(sch)
    # defaults are filled while validating, so validate twice: the second pass sees filled values
    for _ in range(2):
        errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    _raise_first(errors)
    _check_training_overrides(config, sch)
    _check_no_password(config)
    _check_consistency(config)
    return config


def _check_no_survey_key(config: Mapping[str, Any]) -> None:
    """``data.survey`` is gone: the ztf dataset is always ZTF, the lsst dataset always Rubin/LSST."""
    data = config.get("data") if isinstance(config, Mapping) else None
    if isinstance(data, Mapping) and "survey" in data:
        raise ConfigError(
            f"config key data.survey: removed (it was {data['survey']!r}); the ztf dataset is always ZTF and "
            "Rubin/LSST alerts are a dataset of their own: add lsst to grid.datasets "
            f"({LAYOUT.dataset_dir('lsst')}); its alerts come from data.lsst.source (synthetic, or avro with "
            "data.lsst.avro.path and data.lsst.avro.labels). Drop data.survey from the config"
        )


def _check_no_password(config: Mapping[str, Any]) -> None:
    """A storage URL holding a password is refused: config values reach Snakemake's command line, logs and
    records (``--config``) and the job scripts; the password's place is the environment."""
    blocks = [("sweep", config["sweep"])]
    blocks += [(f"archs.{arch}.sweep", spec["sweep"]) for arch, spec in config["archs"].items() if "sweep" in spec]
    for key, block in blocks:
        storage = block.get("storage")
        if not isinstance(storage, str):
            continue
        in_url = URL_PASSWORD.match(storage)
        if (in_url and in_url.group(2)) or QUERY_PASSWORD.search(storage):
            env = block.get("storage_env") or config["sweep"]["storage_env"] or DEFAULT_STORAGE_ENV
            raise ConfigError(
                f"config key {key}.storage: the URL holds a password, and a config value shows up in "
                f"Snakemake's log and records; leave {key}.storage null and put the URL in the environment "
                f"variable {env} instead (export {env}=postgresql+psycopg2://USER:PASSWORD@HOST:5432/DB; "
                f"sweep.storage_env names the variable)"
            )


def _raise_first(errors: list, prefix: tuple = ()) -> None:
    if errors:
        e = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"config key {_key((*prefix, *e.absolute_path))}: {e.message}{more}")


def _check_training_overrides(config: MutableMapping[str, Any], sch: Mapping[str, Any]) -> None:
    """``archs.<name>.training``, ``archs.<name>.sweep``, ``multimodal.metadata_training`` and
    ``multimodal.baseline_training`` hold keys of the training and sweep blocks, checked like them but
    without defaults."""
    for block in ("training", "sweep"):
        props = {
            k: {kk: vv for kk, vv in v.items() if kk != "default"}
            for k, v in sch["properties"][block]["properties"].items()
        }
        override_schema = {"type": "object", "properties": props, "additionalProperties": False}
        overrides = [(("archs", arch, block), spec, block) for arch, spec in config["archs"].items()]
        if block == "training":
            for key in ("metadata_training", "baseline_training"):
                overrides.append((("multimodal", key), config["multimodal"], key))
        for path, parent, key in overrides:
            if key in parent:
                parent[key] = _coerce(parent[key], override_schema)
                errors = list(jsonschema.Draft7Validator(override_schema).iter_errors(parent[key]))
                _raise_first(errors, path)


def _check_fractions(fractions: list) -> None:
    """Each fraction names a folder (``f{fraction}``): it must be a plain decimal, and no two may share one."""
    folders: dict[str, Any] = {}
    for fraction in fractions:
        folder = format_fraction(fraction)
        if not PLAIN_DECIMAL.match(folder):
            raise ConfigError(
                f"config key grid.fractions: {fraction!r} would name its runs f{folder}; fractions "
                f"are percentages of the training alerts (0 < f <= 100) written as plain decimals, "
                f"e.g. 0.5, 5 or 100"
            )
        if folder in folders:
            raise ConfigError(
                f"config key grid.fractions: {folders[folder]!r} and {fraction!r} are the same "
                f"fraction at six significant digits (folder f{folder}); drop one or make them differ"
            )
        folders[folder] = fraction


def _check_consistency(config: Mapping[str, Any]) -> None:
    grid = config["grid"]
    _check_fractions(list(grid["fractions"]))
    if METADATA_ONLY in config["archs"]:
        raise ConfigError(
            f"config key archs.{METADATA_ONLY}: the name {METADATA_ONLY!r} is reserved for the "
            f"metadata-only model (multimodal.metadata_only); rename the architecture"
        )
    for key, archs in (("grid.archs", grid["archs"]), ("multimodal.archs", config["multimodal"]["archs"] or [])):
        for arch in archs:
            if arch not in config["archs"]:
                raise ConfigError(
                    f"config key {key}: {arch!r} is not defined under archs (defined: {', '.join(config['archs'])})"
                )
    for key, regimens in (
        ("grid.regimens", grid["regimens"]),
        ("multimodal.regimens", config["multimodal"]["regimens"] or []),
    ):
        for regimen in regimens:
            if regimen not in config["regimens"]:
                raise ConfigError(
                    f"config key {key}: {regimen!r} is not defined under regimens "
                    f"(defined: {', '.join(config['regimens'])})"
                )
    if MULTIMODAL in grid["modalities"] and MULTIMODAL_DATASET not in grid["datasets"]:
        raise ConfigError(
            f"config key grid.modalities: multimodal models train on the {MULTIMODAL_DATASET} "
            f"dataset only (ls and lsst get image runs); add {MULTIMODAL_DATASET} to grid.datasets or drop multimodal"
        )
    _check_regimens(config)
    if not any(True for _ in grid_cells(config)):
        raise ConfigError(
            "config key grid: no (arch, regimen) pair to train: a regimen other than "
            "'none' only trains the architectures its weights list"
        )
    probs = config["splits"]["probabilities"]
    if abs(sum(probs) - 1.0) > 1e-6:
        raise ConfigError(f"config key splits.probabilities: {probs} must sum to 1")
    if sum(config["data"]["synthetic"]["subset_fractions"].values()) <= 0:
        raise ConfigError("config key data.synthetic.subset_fractions: all fractions are zero")
    lo, hi = config["data"]["synthetic"]["season_days"]
    if lo > hi:
        raise ConfigError(f"config key data.synthetic.season_days: [{lo}, {hi}] is not a range")
    check_sources(config)  # each source checks its own block
    if (
        config["legacysurvey"]["source"] == "synthetic"
        and "ls" in grid["datasets"]
        and config["data"]["source"] != "synthetic"
    ):
        raise ConfigError(
            "config key legacysurvey.source: 'synthetic' Legacy Survey images exist only "
            "for data.source 'synthetic': use legacysurvey.source 'viewer' (the DR10 cutout "
            "service) or leave 'ls' out of grid.datasets"
        )
    for arch, spec in config["archs"].items():
        if spec["kind"] == "timm" and "maxvit" in spec["timm_name"] and spec["input_size"] % 32:
            raise ConfigError(
                f"config key archs.{arch}.input_size: MaxViT needs a multiple of 32, got {spec['input_size']}"
            )


def _check_regimens(config: Mapping[str, Any]) -> None:
    trained = set(config["grid"]["regimens"]) | set(config["multimodal"]["regimens"] or [])
    # the default regimens name the default architectures; a config that leaves one of those out may keep them
    default_archs = set(schema()["properties"]["archs"]["default"])
    for name, spec in config["regimens"].items():
        for arch in spec["weights"] if name in trained else ():
            if arch not in config["archs"] and arch not in default_archs:
                raise ConfigError(
                    f"config key regimens.{name}.weights.{arch}: {arch!r} is not an architecture under "
                    f"archs (defined: {', '.join(config['archs'])}); regimen {name!r} would train "
                    f"nothing for it"
                )
        if spec.get("transfer") is not None:
            _check_transfer(config, name, spec, trained)
        block = spec.get("pretrain")
        if block is None:
            continue
        if spec["weights"] or spec.get("transfer") is not None:
            raise ConfigError(f"config key regimens.{name}: give `weights`, `pretrain` or `transfer`, one of them")
        if name == "none":
            raise ConfigError("config key regimens.none: 'none' is random initialisation and cannot pre-train")
        for arch in block.get("archs") or []:
            if arch not in config["archs"] or config["archs"][arch]["kind"] != "timm":
                raise ConfigError(
                    f"config key regimens.{name}.pretrain.archs: {arch!r} is not a timm architecture "
                    f"under archs (the baseline CNN has no pre-training)"
                )
        corpus = block["corpus"]
        if corpus["source"] == "folder" and not corpus.get("path"):
            raise ConfigError(
                f"config key regimens.{name}.pretrain.corpus.path: corpus source 'folder' needs the "
                f"folder (images.npy, labels.parquet, manifest.json)"
            )


def _check_transfer(config: Mapping[str, Any], name: str, spec: Mapping[str, Any], trained: set[str]) -> None:
    """A transfer regimen: alone (no weights), not ``none``, from a dataset the grid trains image models on,
    to others, and, when the grid uses it, with candidate runs to choose from."""
    block, key = spec["transfer"], f"config key regimens.{name}.transfer"
    if spec["weights"] or name == "none":
        raise ConfigError(f"config key regimens.{name}: a transfer regimen has no `weights` (and is not 'none')")
    if block["from"] in block["to"]:
        raise ConfigError(f"{key}.to: {block['from']!r} is where the weights come from; name other datasets")
    if name not in trained:
        return
    grid = config["grid"]
    if block["from"] not in grid["datasets"] or "image" not in grid["modalities"]:
        raise ConfigError(
            f"{key}.from: the weights come from the grid's image runs on {block['from']!r}, but the grid "
            f"trains none (grid.datasets {grid['datasets']}, grid.modalities {grid['modalities']})"
        )
    fraction = block.get("fraction")
    if fraction is not None and format_fraction(fraction) not in {format_fraction(f) for f in grid["fractions"]}:
        raise ConfigError(f"{key}.fraction: {fraction} is not one of grid.fractions {grid['fractions']}")
    for regimen in block.get("regimens") or []:
        if regimen not in grid["regimens"] or config["regimens"].get(regimen, {}).get("transfer") is not None:
            raise ConfigError(
                f"{key}.regimens: {regimen!r} is not a regimen the grid trains on {block['from']!r} "
                f"(grid.regimens {grid['regimens']}; transfer regimens cannot be candidates)"
            )


def update_config(config: MutableMapping[str, Any], overrides: Mapping[str, Any]) -> MutableMapping[str, Any]:
    """Merge ``overrides`` into ``config`` as Snakemake merges ``--configfile`` files: mappings key by key,
    at any depth; any other value replaces."""
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(config.get(key), MutableMapping):
            update_config(config[key], value)
        else:
            config[key] = copy.deepcopy(value)
    return config


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {path} not found (run from the repository root or pass --config)")
    return load_yaml(path) or {}


def load_config(
    paths: str | os.PathLike | Iterable[str | os.PathLike] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict:
    """The config as the Snakefile resolves it: the files ``paths`` merged in order (as ``--configfile``
    files, which replace the embedded default), or ``config/config.yaml`` when none is given; then
    dotted-key ``overrides``; validated, every key left out taking the schema's default."""
    if paths is None or isinstance(paths, (str, os.PathLike)):
        paths = [] if paths is None else [paths]
    config: dict = {}
    for path in [Path(p) for p in paths] or [DEFAULT_CONFIG]:
        update_config(config, _read_yaml(path))
    for dotted, value in (overrides or {}).items():
        node = config
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    config = dict(validate_config(config))
    for message in shadowed_settings(config, overrides or {}, "--set"):
        log.warning(message)
    return config


def _leaf_keys(values: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The keys of ``values`` as paths to their leaves; a dotted key (``--set training.epochs=1``) is split."""
    out = []
    for key, value in values.items():
        path = (*prefix, *str(key).split("."))
        out += _leaf_keys(value, path) if isinstance(value, Mapping) and value else [path]
    return out


def _get(config: Mapping[str, Any], path: Iterable[str]) -> Any:
    node: Any = config
    for part in path:
        node = node[part]
    return node


def shadowed_settings(config: Mapping[str, Any], user_set: Mapping[str, Any], flag: str) -> list[str]:
    """Warnings, one per value set on the command line (``user_set``: ``--set`` dotted keys or Snakemake's
    ``--config`` mapping; ``flag`` names the option) that a more specific key of the validated ``config``
    overrides for some runs: ``training.<key>`` under ``archs.<arch>.training`` or, for the metadata-only
    model, ``multimodal.metadata_training``; ``sweep.<key>`` under ``archs.<arch>.sweep``."""
    chosen = set(_leaf_keys(user_set))
    trained = list(dict.fromkeys(cell["arch"] for cell in grid_cells(config)))
    messages = []
    for path in sorted(chosen):
        if len(path) < 2 or path[0] not in ("training", "sweep"):
            continue
        block, key, rest = path[0], path[1], path[2:]
        specific = [(("archs", arch, block), arch) for arch in trained if arch != METADATA_ONLY]
        if block == "training" and METADATA_ONLY in trained:
            specific.append((("multimodal", "metadata_training"), "metadata-only"))
        for where, runs in specific:
            overrides = _get(config, where[:-1]).get(where[-1]) or {}
            if key not in overrides:
                continue
            other = (*where, key)
            if rest and isinstance(overrides[key], Mapping):  # sweep blocks merge one level deep
                if rest[0] not in overrides[key]:
                    continue
                other = (*other, rest[0])
            if any(p[: len(other)] == other for p in chosen):
                continue  # the more specific key was set on the command line too
            messages.append(
                f"{flag} {'.'.join(path)}={_get(config, path)!r} does not apply to the {runs} runs: "
                f"{'.'.join(other)}={_get(config, other)!r} overrides it; set {'.'.join(other)} to change those runs"
            )
    return messages


#: A URL's password (scheme://user:PASSWORD@host...).
URL_PASSWORD = re.compile(r"^([A-Za-z][\w+.-]*://[^:/@\s]*:)([^@\s]*)(@)")
#: A password passed as a URL query parameter (...?password=...).
QUERY_PASSWORD = re.compile(r"[?&]password=", re.IGNORECASE)
#: The environment variable a sweep's storage URL is read from (the schema's sweep.storage_env).
DEFAULT_STORAGE_ENV = "ALERTVISION_SWEEP_STORAGE"
MASK = "***"


def mask_url(value: Any) -> Any:
    """A URL with its password replaced by ``***`` (anything else unchanged)."""
    return URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", value) if isinstance(value, str) else value


def masked_config(config: Mapping[str, Any]) -> dict:
    """A copy of the config fit to be written or used as Snakemake params: every sweep storage URL (the only
    place a credential can sit in a config) has its password masked."""
    out = copy.deepcopy(dict(config))
    blocks = [out.get("sweep", {})] + [spec.get("sweep", {}) for spec in out.get("archs", {}).values()]
    for block in blocks:
        if block.get("storage"):
            block["storage"] = mask_url(block["storage"])
    return out


#: What a fraction's folder name may look like (the rules' wildcard constraint).
PLAIN_DECIMAL = re.compile(r"^[0-9]+(\.[0-9]+)?$")
