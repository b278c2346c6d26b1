"""The project's own Avro schema for SYNTHETIC Rubin/LSST alert packets.

Written here, not copied: it lists only the fields the simulator fills, under the names and with the
Avro types that Rubin's alert schema 10.0 gives them (a required field stays required, a nullable one
is ``["null", type]`` with default null), in Rubin's layout: a top-level alert record holding
``diaSourceId``, a ``diaSource`` record, ``prvDiaSources`` (an array of diaSource records),
``diaObject`` and the three cutouts as bytes (no ``prvDiaForcedSources``, ``ssSource`` or
``mpc_orbits``: the simulation has no forced photometry and no solar-system association). A reader of
Rubin's alerts that reads fields by name (as :mod:`alertvision.surveys.lsst` does) reads these
packets as it reads Rubin's; fields Rubin has and this schema lacks are absent, not null.

The namespace ``alertvision.synthetic.lsst`` says, in every container's header, that the packets
are SYNTHETIC. ``tests/unit/test_synthetic_lsst.py`` checks each field's name and type against the
installed ``lsst-alert-packet`` package (a test dependency), so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

NAMESPACE = "alertvision.synthetic.lsst"
#: the Rubin schema version whose field names and types this schema follows
RUBIN_VERSION = "10.0"
BANDS = ("u", "g", "r", "i", "z", "y")


def _opt(name: str, avro_type: str) -> dict[str, Any]:
    return {"name": name, "type": ["null", avro_type], "default": None}


def _req(name: str, avro_type: str) -> dict[str, Any]:
    return {"name": name, "type": avro_type}


DIA_SOURCE_FIELDS: list[dict[str, Any]] = [
    _req("diaSourceId", "long"),
    _req("visit", "long"),
    _req("detector", "int"),
    _opt("diaObjectId", "long"),
    _opt("ssObjectId", "long"),
    _req("midpointMjdTai", "double"),
    _req("ra", "double"),
    _opt("raErr", "float"),
    _req("dec", "double"),
    _opt("decErr", "float"),
    _req("x", "float"),
    _req("y", "float"),
    _opt("isNegative", "boolean"),
    _opt("snr", "float"),
    _opt("psfFlux", "float"),
    _opt("psfFluxErr", "float"),
    _opt("psfChi2", "float"),
    _opt("psfNdata", "int"),
    _opt("scienceFlux", "float"),
    _opt("scienceFluxErr", "float"),
    _opt("templateFlux", "float"),
    _opt("templateFluxErr", "float"),
    _opt("extendedness", "float"),
    _opt("reliability", "float"),
    _opt("band", "string"),
    _opt("isDipole", "boolean"),
    _req("timeProcessedMjdTai", "double"),
    _opt("bboxSize", "int"),
    _opt("pixelFlags", "boolean"),
    _opt("pixelFlags_bad", "boolean"),
    _opt("pixelFlags_cr", "boolean"),
    _opt("pixelFlags_crCenter", "boolean"),
    _opt("pixelFlags_edge", "boolean"),
    _opt("pixelFlags_interpolated", "boolean"),
    _opt("pixelFlags_interpolatedCenter", "boolean"),
    _opt("pixelFlags_saturated", "boolean"),
    _opt("pixelFlags_saturatedCenter", "boolean"),
]

DIA_OBJECT_FIELDS: list[dict[str, Any]] = [
    _req("diaObjectId", "long"),
    _req("validityStartMjdTai", "double"),
    _req("ra", "double"),
    _req("dec", "double"),
    *[f for b in BANDS for f in (_opt(f"{b}_psfFluxMean", "float"), _opt(f"{b}_psfFluxNdata", "int"))],
    _opt("firstDiaSourceMjdTai", "double"),
    _opt("lastDiaSourceMjdTai", "double"),
    _req("nDiaSources", "int"),
]


def alert_schema() -> dict[str, Any]:
    """The Avro schema (a JSON-like dict, fresh each call) of a SYNTHETIC Rubin alert packet."""
    dia_source = {
        "type": "record",
        "name": "diaSource",
        "namespace": NAMESPACE,
        "doc": "SYNTHETIC: a simulated diaSource (alertvision.synthetic.lsst)",
        "fields": [dict(f) for f in DIA_SOURCE_FIELDS],
    }
    dia_object = {
        "type": "record",
        "name": "diaObject",
        "namespace": NAMESPACE,
        "doc": "SYNTHETIC: a simulated diaObject (alertvision.synthetic.lsst)",
        "fields": [dict(f) for f in DIA_OBJECT_FIELDS],
    }
    return {
        "type": "record",
        "name": "alert",
        "namespace": NAMESPACE,
        "doc": f"SYNTHETIC Rubin/LSST alert (field names and types of Rubin's schema {RUBIN_VERSION}, a subset)",
        "fields": [
            _req("diaSourceId", "long"),
            {"name": "diaSource", "type": dia_source},
            {
                "name": "prvDiaSources",
                "type": ["null", {"type": "array", "items": f"{NAMESPACE}.diaSource"}],
                "default": None,
            },
            {"name": "diaObject", "type": ["null", dia_object], "default": None},
            _opt("cutoutDifference", "bytes"),
            _opt("cutoutScience", "bytes"),
            _opt("cutoutTemplate", "bytes"),
        ],
    }
