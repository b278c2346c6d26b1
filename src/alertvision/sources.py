"""Where datasets come from: one registry for ZTF alert sources, one for Legacy Survey images.

``data.source`` picks a ZTF ingester; ``legacysurvey.source`` picks a provider of raw cutouts
(``legacysurvey.product`` says which: FITS cubes or colour JPEGs). Each ingester writes the data
contract (see :mod:`alertvision.contract`), so nothing downstream depends on the source. New
sources register here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

from alertvision.legacysurvey import CubeProvider, build_ls_dataset, source_positions

#: ingester(config, out_dir, progress) -> manifest; config is the whole validated config.
Ingester = Callable[[Mapping[str, Any], "str | os.PathLike", bool], dict]


def _ingest_synthetic(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool) -> dict:
    from alertvision.synthetic.ztf import build_synthetic_ztf

    return build_synthetic_ztf(config["data"]["synthetic"], config["splits"], out_dir, progress=progress)


def _ingest_release(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool) -> dict:
    from alertvision.ingest.release import ingest_release

    return ingest_release(config, out_dir, progress=progress)


def _ingest_avro(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool) -> dict:
    from alertvision.ingest.avro import ingest_avro

    return ingest_avro(config, out_dir, progress=progress)


def _ingest_kowalski(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool) -> dict:
    from alertvision.ingest.kowalski import ingest_kowalski

    return ingest_kowalski(config, out_dir, progress=progress)


ZTF_SOURCES: dict[str, Ingester] = {
    "synthetic": _ingest_synthetic,
    "release": _ingest_release,
    "avro": _ingest_avro,
    "kowalski": _ingest_kowalski,
}


def _synthetic_cubes(config: Mapping[str, Any]) -> CubeProvider:
    from alertvision.synthetic.legacysurvey import synthetic_provider
    from alertvision.synthetic.ztf import synthetic_scenes

    return synthetic_provider(synthetic_scenes(config["data"]["synthetic"]), config["legacysurvey"]["synthetic"])


def _viewer_cubes(config: Mapping[str, Any], ztf_dir: str | os.PathLike, out_dir: str | os.PathLike,
                  progress: bool) -> tuple[CubeProvider, dict]:
    from alertvision.contract import open_dataset
    from alertvision.legacysurvey_fetch import FAILURES_FILE, STATUSES, VIEWER_PRODUCTS, fetch_cutouts

    cfg = config["legacysurvey"]["viewer"]
    product = VIEWER_PRODUCTS[config["legacysurvey"]["product"]]
    sources = source_positions(open_dataset(ztf_dir).alerts)
    provider, report = fetch_cutouts(sources, cfg, Path(out_dir) / FAILURES_FILE, progress=progress, product=product)
    return provider, {"fetch": {"product": product.name, "url": cfg[product.url_key], "layer": cfg["layer"],
                                "query": product.query(cfg), "cache_dir": cfg["cache_dir"],
                                **{s: report.counts[s] for s in STATUSES}}}


#: provider(config, ztf_dir, out_dir, progress) -> (cube provider, manifest extra)
LS_SOURCES: dict[str, Callable[..., tuple[CubeProvider, dict]]] = {
    "synthetic": lambda config, ztf_dir, out_dir, progress: (_synthetic_cubes(config), {}),
    "viewer": _viewer_cubes,
}


def ingest_ztf(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Write the ZTF dataset of ``data.source`` to ``out_dir``; returns its manifest."""
    source = config["data"]["source"]
    if source not in ZTF_SOURCES:
        raise ValueError(f"data.source {source!r} is not one of {', '.join(ZTF_SOURCES)}")
    return ZTF_SOURCES[source](config, out_dir, progress)


def ingest_ls(config: Mapping[str, Any], ztf_dir: str | os.PathLike, out_dir: str | os.PathLike,
              progress: bool = True) -> dict:
    """Write the Legacy Survey dataset for the alerts in ``ztf_dir``; returns its manifest."""
    source = config["legacysurvey"]["source"]
    if source not in LS_SOURCES:
        raise ValueError(f"legacysurvey.source {source!r} is not one of {', '.join(LS_SOURCES)}")
    synthetic = source == "synthetic" or config["data"]["source"] == "synthetic"
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    provider, extra = LS_SOURCES[source](config, ztf_dir, out_dir, progress)
    return build_ls_dataset(ztf_dir, out_dir, provider, config["legacysurvey"], source=source, synthetic=synthetic,
                            digest_blocks=(config["data"], config["splits"]), extra=extra, progress=progress)
