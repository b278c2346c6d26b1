"""``legacysurvey.source: viewer``: cutouts from the Legacy Survey viewer's cutout service (FITS or JPEG),
cached one file per source."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from alertvision.data.sources import LsSource
from alertvision.schema import ConfigError


def provider(
    config: Mapping[str, Any], ztf_dir: str | os.PathLike, out_dir: str | os.PathLike, progress: bool
) -> tuple[Any, dict]:
    # deferred: pandas is heavy
    from alertvision.data.contract import open_dataset
    from alertvision.data.legacysurvey import source_positions
    from alertvision.data.legacysurvey_fetch import FAILURES_FILE, STATUSES, VIEWER_PRODUCTS, fetch_cutouts

    cfg = config["legacysurvey"]["viewer"]
    product = VIEWER_PRODUCTS[config["legacysurvey"]["product"]]
    sources = source_positions(open_dataset(ztf_dir).alerts)
    cubes, report = fetch_cutouts(sources, cfg, Path(out_dir) / FAILURES_FILE, progress=progress, product=product)
    return cubes, {
        "fetch": {
            "product": product.name,
            "url": cfg[product.url_key],
            "layer": cfg["layer"],
            "query": product.query(cfg),
            "cache_dir": cfg["cache_dir"],
            **{s: report.counts[s] for s in STATUSES},
        }
    }


def check(ls: Mapping[str, Any]) -> None:
    """The viewer's JPEG is always red, green, blue = z, r, g."""
    if ls["product"] == "jpeg" and list(ls["channels"]) != ["z", "r", "g"]:
        raise ConfigError(
            f"config key legacysurvey.channels: {list(ls['channels'])} applies to product 'fits' "
            "only; the viewer's JPEG is always red, green, blue = z, r, g (leave channels out)"
        )


SOURCE = LsSource("viewer", provider, products=("fits", "jpeg"), check=check)
