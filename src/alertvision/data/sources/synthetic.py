"""``data.source: synthetic``: the embedded simulated BTS-like stream (labelled synthetic everywhere); for the
lsst dataset (``data.lsst.source: synthetic``, the view ``survey_config(config, "lsst")``), the same simulated
sources as Rubin sees them, through the real LSST ingest."""

from __future__ import annotations

import os
from typing import Any, Mapping

from alertvision.data.sources import ZtfSource


def ingest(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool) -> dict:
    if str(config["data"].get("survey") or "ztf").lower() == "lsst":
        from alertvision.synthetic.lsst import build_synthetic_lsst  # deferred: pandas is heavy

        return build_synthetic_lsst(config, out_dir, progress=progress)
    from alertvision.data.features import Cuts  # deferred: pandas is heavy
    from alertvision.synthetic.ztf import build_synthetic_ztf  # deferred: pandas is heavy

    cuts = Cuts.from_spec(config["data"].get("cuts"))
    return build_synthetic_ztf(
        config["data"]["synthetic"],
        config["splits"],
        out_dir,
        progress=progress,
        cuts=cuts,
        masked_pixels=config["data"]["masked_pixels"],
    )


SOURCE = ZtfSource("synthetic", ingest, synthetic=True)
