"""``data.source: kowalski``: the BTS training set compiled from Kowalski and Fritz (needs credentials)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from alertvision.data.sources import ZtfSource
from alertvision.schema import ConfigError


def ingest(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool) -> dict:
    from alertvision.data.ingest.kowalski import ingest_kowalski  # deferred: pandas is heavy

    return ingest_kowalski(config, out_dir, progress=progress)


def input_files(block: Mapping[str, Any]) -> list[Path]:
    return [Path(p) for p in block["bts"].values() if p]


def check(block: Mapping[str, Any]) -> None:
    if not block["bts"]["trues"]:
        raise ConfigError(
            "config key data.kowalski.bts.trues: data.source 'kowalski' needs a CSV export of the "
            "BTS sample explorer (column ZTFID) for the trues; dims and vars are optional"
        )
    if block["rejects"]["enabled"] and not block["rejects"]["group_ids"]:
        raise ConfigError(
            "config key data.kowalski.rejects.group_ids: rejects are Fritz candidates saved to none "
            "of these groups; list them, or set data.kowalski.rejects.enabled: false"
        )


SOURCE = ZtfSource("kowalski", ingest, input_files, check)
