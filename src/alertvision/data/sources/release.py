"""``data.source: release``: the public BTSbot training set (Zenodo 10839691), extracted or as its two zips."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from alertvision.data.sources import ZtfSource
from alertvision.schema import ConfigError


def ingest(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool) -> dict:
    from alertvision.data.ingest.release import ingest_release  # deferred: pandas is heavy

    return ingest_release(config, out_dir, progress=progress)


def input_files(block: Mapping[str, Any]) -> list[Path]:
    from alertvision.data.ingest.release import ReleaseError, locate_release  # deferred: pandas is heavy

    try:
        return [f.path for per_split in locate_release(block).values() for f in per_split.values()]
    except ReleaseError:
        return [Path(p) for p in (block.get("images_zip"), block.get("metadata_zip")) if p]


def check(block: Mapping[str, Any]) -> None:
    if not (block.get("path") or (block.get("images_zip") and block.get("metadata_zip"))):
        raise ConfigError(
            "config key data.release: data.source 'release' needs data.release.path (the folder "
            "of the extracted files or of the two zips) or both data.release.images_zip and "
            "data.release.metadata_zip"
        )


SOURCE = ZtfSource("release", ingest, input_files, check)
