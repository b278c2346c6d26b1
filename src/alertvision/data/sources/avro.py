"""``data.source: avro``: ZTF alert packets (files, folders, nightly ``.tar`` archives, compressed) and labels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from alertvision.data.sources import ZtfSource
from alertvision.schema import ConfigError


def ingest(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool) -> dict:
    """ZTF packets through the packet ingest; the lsst dataset's view (``survey_config(config, "lsst")``, its
    ``data.survey`` lsst), Rubin packets through the LSST plugin."""
    if str(config["data"].get("survey") or "ztf").lower() != "ztf":
        from alertvision.surveys.lsst.dataset import ingest_lsst_avro  # deferred: pandas is heavy

        return ingest_lsst_avro(config, out_dir, progress=progress)
    from alertvision.data.ingest.avro import ingest_avro  # deferred: pandas is heavy

    return ingest_avro(config, out_dir, progress=progress)


def input_files(block: Mapping[str, Any]) -> list[Path]:
    from alertvision.data.ingest.avro import AvroInputError, packet_files  # deferred: pandas is heavy

    paths: list[Path] = []
    for entry in [block["path"]] if isinstance(block["path"], str) else list(block["path"] or []):
        try:
            paths += packet_files(entry, quiet=True)
        except AvroInputError:
            continue
    return paths + ([Path(block["labels"])] if block.get("labels") else [])


def check(block: Mapping[str, Any]) -> None:
    if not (block.get("path") and block.get("labels")):
        raise ConfigError(
            "config key data.avro: data.source 'avro' needs data.avro.path (packets: folder, "
            ".avro file or .tar/.tar.gz archive) and data.avro.labels (objectId, label, source_set)"
        )


SOURCE = ZtfSource("avro", ingest, input_files, check)
