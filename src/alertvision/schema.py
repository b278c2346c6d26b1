"""The config's ground: its error, its YAML reader and its schema (the one home of defaults).

Below everything that reads a config: a data source's check raises :class:`ConfigError`, the typed
settings fill a partial block from :func:`schema`, and :mod:`alertvision.config` loads and validates.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader (no tag runs code) that refuses a key given twice in one mapping, which YAML
    loaders otherwise settle silently by keeping the last value."""

    origin = "YAML text"

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden on purpose
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader reports it
                    continue
                if first is not None:
                    raise ConfigError(
                        f"{self.origin}, line {line}: key {key!r} is given twice (first on line {first}); "
                        f"YAML would keep only the last value: keep one"
                    )
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, origin: str = "YAML text") -> Any:
    """``text`` read as YAML with the safe loader, refusing duplicate keys; ``origin`` names it in errors.

    The one YAML reader of configuration: config files (the CLI's and, through :func:`check_config_files`,
    Snakemake's), ``--set`` values and the schema."""
    loader = _StrictLoader(text)
    loader.origin = origin
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin} is not valid YAML: {exc}") from exc
    finally:
        loader.dispose()


def schema() -> dict:
    """The config schema (workflow/schemas/config.schema.yaml, shipped with the package)."""
    text = resources.files("alertvision").joinpath("config.schema.yaml").read_text()
    return parse_yaml(text, "the config schema")
