"""Where datasets come from: one plugin module per source, found by this registry.

``data.source`` picks a ZTF source; ``data.lsst.source`` the source of the Rubin/LSST dataset (``synthetic``
or ``avro``: the same plugins, given the view :func:`survey_config` makes); ``legacysurvey.source`` picks a
provider of raw Legacy Survey cutouts (``legacysurvey.product`` says which: FITS cubes or colour JPEGs). Each
plugin module of
this package defines ``SOURCE``: a :class:`ZtfSource` (its name, the config block it reads, the
input files Snakemake should track, the consistency checks of its block, its ingest) or an
:class:`LsSource` (name, products, checks, cube provider). Every ingest writes the data contract
(:mod:`alertvision.data.contract`), so nothing downstream depends on the source.

Adding a source: a module here with its ``SOURCE``, its block and name in the schema
(``data.<name>`` and the ``data.source`` enum); ``tests/unit/test_sources.py`` checks the two agree.
Plugin modules import their heavy dependencies inside functions: the config check and Snakemake's
parse read this registry.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from alertvision.atomic import check_writable
from alertvision.schema import ConfigError

#: ingest(config, out_dir, progress) -> manifest; config is the whole validated config.
Ingester = Callable[[Mapping[str, Any], "str | os.PathLike", bool], dict]


def _no_files(block: Mapping[str, Any]) -> list[Path]:
    return []


def _no_check(block: Mapping[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class ZtfSource:
    """A ``data.source``: what it reads from the config (``data.<block>``), the files it reads (existing or
    not: the registry keeps those that exist), what it refuses in its block, and its ingest."""

    name: str
    ingest: Ingester
    input_files: Callable[[Mapping[str, Any]], list[Path]] = _no_files
    check: Callable[[Mapping[str, Any]], None] = _no_check
    synthetic: bool = False

    @property
    def block(self) -> str:
        """The config key of its block: ``data.<name>``."""
        return f"data.{self.name}"


#: provider(config, ztf_dir, out_dir, progress) -> (cube provider, manifest extra)
CubeSource = Callable[[Mapping[str, Any], "str | os.PathLike", "str | os.PathLike", bool], tuple[Any, dict]]


@dataclass(frozen=True)
class LsSource:
    """A ``legacysurvey.source``: the products it serves, what it refuses in the ``legacysurvey`` block, and
    its cube provider."""

    name: str
    provider: CubeSource
    products: tuple[str, ...] = ("fits",)
    check: Callable[[Mapping[str, Any]], None] = _no_check
    synthetic: bool = False


@dataclass
class _Registry:
    ztf: dict[str, ZtfSource] = field(default_factory=dict)
    ls: dict[str, LsSource] = field(default_factory=dict)


_REGISTRY: _Registry | None = None


def registry() -> _Registry:
    """Every plugin of this package, imported once."""
    global _REGISTRY
    if _REGISTRY is None:
        found = _Registry()
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            source = getattr(importlib.import_module(f"{__name__}.{info.name}"), "SOURCE", None)
            if isinstance(source, ZtfSource):
                found.ztf[source.name] = source
            elif isinstance(source, LsSource):
                found.ls[source.name] = source
        _REGISTRY = found
    return _REGISTRY


def ztf_source(name: str) -> ZtfSource:
    """The plugin of ``data.source`` ``name``."""
    sources = registry().ztf
    if name not in sources:
        raise ValueError(f"data.source {name!r} is not one of {', '.join(sorted(sources))}")
    return sources[name]


def ls_source(name: str) -> LsSource:
    """The plugin of ``legacysurvey.source`` ``name``."""
    sources = registry().ls
    if name not in sources:
        raise ValueError(f"legacysurvey.source {name!r} is not one of {', '.join(sorted(sources))}")
    return sources[name]


#: the surveys of the grid's alert datasets (``ls`` is the Legacy Survey images of the ZTF alerts)
DATASET_SURVEYS = {"ztf": "ztf", "lsst": "lsst"}
#: the ``data.lsst.source`` values: plugins of this package that read Rubin/LSST alerts too
LSST_SOURCES = ("synthetic", "avro")


def survey_config(config: Mapping[str, Any], survey: str) -> Mapping[str, Any]:
    """The config a source plugin's ingest reads for the alerts of ``survey``: ``config`` itself for ZTF; for
    Rubin/LSST a view whose data block has ``survey: lsst``, ``source`` = ``data.lsst.source``, ``avro`` =
    ``data.lsst.avro``, ``lsst`` = the plugin's settings (``data.lsst`` without ``source`` and ``avro``) and
    ``synthetic`` = ``data.synthetic`` (the simulated sources the synthetic Rubin sky shares with ZTF). The
    one place the LSST dataset's keys become what the plugins dispatch on."""
    if survey == "ztf":
        return config
    if survey != "lsst":
        raise ValueError(f"survey {survey!r} is not one of {', '.join(sorted(DATASET_SURVEYS.values()))}")
    data = config["data"]
    block = dict(data.get("lsst") or {})
    source = block.pop("source", None) or "synthetic"
    avro = dict(block.pop("avro", None) or {})
    view = {
        "survey": "lsst",
        "source": source,
        "lsst": block,
        "avro": {"path": avro.get("path"), "labels": avro.get("labels")},
    }
    if data.get("synthetic") is not None:
        view["synthetic"] = data["synthetic"]
    return {**config, "data": view}


def check_lsst_source(config: Mapping[str, Any]) -> None:
    """``data.lsst.source: avro`` needs ``data.lsst.avro.path`` and ``.labels`` (ConfigError naming them)."""
    block = config["data"].get("lsst") or {}
    avro = block.get("avro") or {}
    if (block.get("source") or "synthetic") == "avro" and not (avro.get("path") and avro.get("labels")):
        raise ConfigError(
            "config key data.lsst.avro: data.lsst.source 'avro' needs data.lsst.avro.path (Rubin packets: "
            "folder, packet file or .tar/.tar.gz archive) and data.lsst.avro.labels (diaObjectId, label, "
            "source_set)"
        )


def check_sources(config: Mapping[str, Any]) -> None:
    """The chosen sources' checks of their blocks (raise ConfigError naming the key); the LSST dataset's when
    ``lsst`` is a dataset of the grid."""
    data, ls = config["data"], config["legacysurvey"]
    ztf_source(data["source"]).check(data.get(data["source"], {}))
    if "lsst" in config.get("grid", {}).get("datasets", ()):
        check_lsst_source(config)
    provider = ls_source(ls["source"])
    if ls["product"] not in provider.products:
        serving = [name for name, other in registry().ls.items() if ls["product"] in other.products]
        raise ConfigError(
            f"config key legacysurvey.product: {ls['product']!r} images come from the {' or '.join(serving)} "
            f"source only; legacysurvey.source {provider.name!r} serves {' or '.join(provider.products)}: use "
            f"legacysurvey.product {provider.products[0]!r} with it, or legacysurvey.source {serving[0]!r}"
        )
    provider.check(ls)


def source_input_files(config: Mapping[str, Any], dataset: str = "ztf") -> list[str]:
    """Every existing file the source of an alert dataset reads (``ztf``: ``data.source``'s packets, archives,
    labels, release files, BTS lists; ``lsst``: ``data.lsst.avro``'s packets and labels), sorted; empty for
    synthetic data. What does not exist is left for the ingest to report."""
    view = survey_config(config, DATASET_SURVEYS[dataset])
    source = view["data"]["source"]
    paths = ztf_source(source).input_files(view["data"].get(source, {}))
    return sorted({str(p) for p in paths if p is not None and Path(p).is_file()})


def ingest_ztf(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Write the ZTF dataset of ``data.source`` to ``out_dir``; returns its manifest."""
    return ztf_source(config["data"]["source"]).ingest(config, out_dir, progress)


def ingest_lsst(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Write the Rubin/LSST dataset of ``data.lsst.source`` to ``out_dir``; returns its manifest."""
    view = survey_config(config, "lsst")
    source = view["data"]["source"]
    if source not in LSST_SOURCES:
        raise ConfigError(f"config key data.lsst.source: {source!r} is not one of {', '.join(LSST_SOURCES)}")
    check_lsst_source(config)
    return ztf_source(source).ingest(view, out_dir, progress)


def ingest_ls(
    config: Mapping[str, Any], ztf_dir: str | os.PathLike, out_dir: str | os.PathLike, progress: bool = True
) -> dict:
    """Write the Legacy Survey dataset for the alerts in ``ztf_dir``; returns its manifest."""
    from alertvision.data.legacysurvey import build_ls_dataset  # deferred: pandas is heavy

    provider = ls_source(config["legacysurvey"]["source"])
    synthetic = provider.synthetic or ztf_source(config["data"]["source"]).synthetic
    check_writable(out_dir, "the Legacy Survey dataset")
    cubes, extra = provider.provider(config, ztf_dir, out_dir, progress)
    return build_ls_dataset(
        ztf_dir,
        out_dir,
        cubes,
        config["legacysurvey"],
        source=provider.name,
        synthetic=synthetic,
        digest_blocks=(config["data"], config["splits"]),
        extra=extra,
        progress=progress,
    )
