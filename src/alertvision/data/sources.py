"""Where datasets come from: one registry for ZTF alert sources, one for Legacy Survey images.

``data.source`` picks a ZTF ingester; ``legacysurvey.source`` picks a provider of raw cutouts
(``legacysurvey.product`` says which: FITS cubes or colour JPEGs). Each ingester writes the data
contract (see :mod:`alertvision.data.contract`), so nothing downstream depends on the source. New
sources register here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

from alertvision.atomic import check_writable
from alertvision.data.legacysurvey import CubeProvider, build_ls_dataset, source_positions

#: ingester(config, out_dir, progress) -> manifest; config is the whole validated config.
Ingester = Callable[[Mapping[str, Any], "str | os.PathLike", bool], dict]


def _ingest_synthetic(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool) -> dict:
    from alertvision.synthetic.ztf import build_synthetic_ztf

    return build_synthetic_ztf(config["data"]["synthetic"], config["splits"], out_dir, progress=progress)


def _ingest_release(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool) -> dict:
    from alertvision.data.ingest.release import ingest_release

    return ingest_release(config, out_dir, progress=progress)


def _ingest_avro(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool) -> dict:
    from alertvision.data.ingest.avro import ingest_avro

    return ingest_avro(config, out_dir, progress=progress)


def _ingest_kowalski(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool) -> dict:
    from alertvision.data.ingest.kowalski import ingest_kowalski

    return ingest_kowalski(config, out_dir, progress=progress)


def source_input_files(config: Mapping[str, Any]) -> list[str]:
    """Every existing file the ZTF source of ``data.source`` reads (packets, archives, labels, release files,
    BTS lists), sorted; empty for synthetic data. What does not exist is left for the ingest to report."""
    source = config["data"]["source"]
    block = config["data"].get(source, {})
    paths: list[Path] = []
    if source == "avro":
        from alertvision.data.ingest.avro import AvroInputError, packet_files

        for entry in [block["path"]] if isinstance(block["path"], str) else list(block["path"] or []):
            try:
                paths += packet_files(entry)
            except AvroInputError:
                continue
        paths.append(Path(block["labels"]) if block.get("labels") else None)
    elif source == "release":
        from alertvision.data.ingest.release import ReleaseError, locate_release

        try:
            paths += [f.path for per_split in locate_release(block).values() for f in per_split.values()]
        except ReleaseError:
            paths += [Path(p) for p in (block.get("images_zip"), block.get("metadata_zip")) if p]
    elif source == "kowalski":
        paths += [Path(p) for p in block["bts"].values() if p]
    return sorted({str(p) for p in paths if p is not None and p.is_file()})


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


def _viewer_cubes(
    config: Mapping[str, Any], ztf_dir: str | os.PathLike, out_dir: str | os.PathLike, progress: bool
) -> tuple[CubeProvider, dict]:
    from alertvision.data.contract import open_dataset
    from alertvision.data.legacysurvey_fetch import FAILURES_FILE, STATUSES, VIEWER_PRODUCTS, fetch_cutouts

    cfg = config["legacysurvey"]["viewer"]
    product = VIEWER_PRODUCTS[config["legacysurvey"]["product"]]
    sources = source_positions(open_dataset(ztf_dir).alerts)
    provider, report = fetch_cutouts(sources, cfg, Path(out_dir) / FAILURES_FILE, progress=progress, product=product)
    return provider, {
        "fetch": {
            "product": product.name,
            "url": cfg[product.url_key],
            "layer": cfg["layer"],
            "query": product.query(cfg),
            "cache_dir": cfg["cache_dir"],
            **{s: report.counts[s] for s in STATUSES},
        }
    }


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


def ingest_ls(
    config: Mapping[str, Any], ztf_dir: str | os.PathLike, out_dir: str | os.PathLike, progress: bool = True
) -> dict:
    """Write the Legacy Survey dataset for the alerts in ``ztf_dir``; returns its manifest."""
    source = config["legacysurvey"]["source"]
    if source not in LS_SOURCES:
        raise ValueError(f"legacysurvey.source {source!r} is not one of {', '.join(LS_SOURCES)}")
    synthetic = source == "synthetic" or config["data"]["source"] == "synthetic"
    check_writable(out_dir, "the Legacy Survey dataset")
    provider, extra = LS_SOURCES[source](config, ztf_dir, out_dir, progress)
    return build_ls_dataset(
        ztf_dir,
        out_dir,
        provider,
        config["legacysurvey"],
        source=source,
        synthetic=synthetic,
        digest_blocks=(config["data"], config["splits"]),
        extra=extra,
        progress=progress,
    )
