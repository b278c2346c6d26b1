"""Survey plugins: what differs between alert surveys (see :mod:`.base`). ``get_survey("lsst")``."""

from __future__ import annotations

from importlib import import_module
from typing import Any, Mapping

from alertvision.surveys.base import Survey

#: survey key -> "module:class"; a new survey is one module and a line here
SURVEYS: dict[str, str] = {"lsst": "alertvision.surveys.lsst:LsstSurvey"}


def get_survey(name: str, block: Mapping[str, Any] | None = None) -> Survey:
    """The plugin of survey ``name`` configured from its config block (None: its defaults)."""
    if name not in SURVEYS:
        raise ValueError(f"survey {name!r} is not one of {', '.join(sorted(SURVEYS))}")
    module, cls = SURVEYS[name].split(":")
    plugin: type[Survey] = getattr(import_module(module), cls)
    return plugin.from_config(block or {})
