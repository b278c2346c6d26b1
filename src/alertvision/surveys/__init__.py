"""Survey plugins: what differs between alert surveys (see :mod:`.base`). ``get_survey("lsst")``."""

from __future__ import annotations

from importlib import import_module
from typing import Any, Mapping

from alertvision.surveys.base import Survey

#: survey key -> "module:class"; a new survey is one module and a line here
SURVEYS: dict[str, str] = {
    "ztf": "alertvision.surveys.ztf:ZtfSurvey",
    "lsst": "alertvision.surveys.lsst:LsstSurvey",
}
#: the survey of a config without data.survey (every config but the lsst dataset's view,
#: alertvision.data.sources.survey_config), and of a model whose export names none
DEFAULT_SURVEY = "ztf"


def get_survey(name: str, block: Mapping[str, Any] | None = None) -> Survey:
    """The plugin of survey ``name`` configured from its config block (None: its defaults)."""
    key = str(name).lower()
    if key not in SURVEYS:
        raise ValueError(f"survey {name!r} is not one of {', '.join(sorted(SURVEYS))} (a dataset's survey)")
    module, cls = SURVEYS[key].split(":")
    plugin: type[Survey] = getattr(import_module(module), cls)
    return plugin.from_config(block or {})


def survey_of_config(config: Mapping[str, Any]) -> Survey:
    """The plugin ``data.survey`` selects (default ztf; the user's config has no such key, the lsst dataset's view
    has lsst), configured from the config: ZTF from ``data.cuts`` and ``data.masked_pixels``, LSST from
    ``data.lsst``."""
    data = config.get("data") or {}
    name = str(data.get("survey") or DEFAULT_SURVEY).lower()
    if name == "ztf":
        block = {k: data[k] for k in ("cuts", "masked_pixels") if data.get(k) is not None}
    else:
        block = dict(data.get(name) or {})
    return get_survey(name, block)
