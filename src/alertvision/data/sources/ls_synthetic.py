"""``legacysurvey.source: synthetic``: FITS-like cubes rendered from the synthetic sky's host galaxies."""

from __future__ import annotations

import os
from typing import Any, Mapping

from alertvision.data.sources import LsSource


def provider(
    config: Mapping[str, Any], ztf_dir: str | os.PathLike, out_dir: str | os.PathLike, progress: bool
) -> tuple[Any, dict]:
    from alertvision.synthetic.legacysurvey import synthetic_provider  # deferred: pandas is heavy
    from alertvision.synthetic.ztf import synthetic_scenes  # deferred: pandas is heavy

    scenes = synthetic_scenes(config["data"]["synthetic"])
    return synthetic_provider(scenes, config["legacysurvey"]["synthetic"]), {}


SOURCE = LsSource("synthetic", provider, products=("fits",), synthetic=True)
