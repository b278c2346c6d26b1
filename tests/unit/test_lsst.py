"""The Rubin/LSST survey plugin on real Rubin alerts (tests/data/lsst_alerts) and on the fake alert of
every schema version 7.0-11.1 that Rubin's lsst-alert-packet package ships (a test dependency; its files
are read from the installed package, never copied). Wire-format packets are framed here: byte 0, the
4-byte big-endian schema id, then fastavro's schemaless body. Expected triplets and features are
computed here with astropy and numpy straight from the packet, not with the project's code."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import fastavro
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from lsst.alert.packet import Schema, get_schema_path

from alertvision.data.ingest.http import HttpError
from alertvision.surveys import get_survey
from alertvision.surveys.base import FeatureError, Skip
from alertvision.surveys.lsst import LsstSettings, LsstSurvey
from alertvision.surveys.lsst.features import FEATURE_NAMES, feature_table
from alertvision.surveys.lsst.packets import (
    SCHEMA_VERSIONS,
    SchemaRegistry,
    SchemaStore,
    UnknownSchemaError,
    decode_wire,
)
from alertvision.surveys.lsst.triplet import TripletSettings

REAL = Path(__file__).resolve().parents[1] / "data" / "lsst_alerts" / "part-2-918301.avro"
VERSIONS = ("7.0", "7.1", "7.2", "7.3", "7.4", "8.0", "9.0", "10.0", "11.0", "11.1")


def rubin_schema(version: str) -> dict:
    major, minor = version.split(".")
    return Schema.from_file(f"{get_schema_path(major, minor)}/lsst.v{major}_{minor}.alert.avsc").definition


def fake_alert_bytes(version: str) -> bytes:
    major, minor = version.split(".")
    return (Path(get_schema_path(major, minor)) / "sample_data" / "fakeAlert.avro").read_bytes()


def frame(record: dict, version: str) -> bytes:
    """Rubin's wire format, written here: 0, the big-endian id major*100+minor, the schemaless body."""
    major, minor = (int(x) for x in version.split("."))
    out = io.BytesIO()
    out.write(bytes([0]) + (major * 100 + minor).to_bytes(4, "big"))
    fastavro.schemaless_writer(out, rubin_schema(version), record)
    return out.getvalue()


def as_rubin(record: dict) -> dict:
    """A redistributed record as Rubin wrote it: the broker writes an absent sub-record (ssSource,
    mpc_orbits, a solar-system alert's diaObject) as a record of nulls where Rubin's is null."""
    return {k: None if isinstance(v, dict) and all(x is None for x in v.values()) else v for k, v in record.items()}


@pytest.fixture(scope="module")
def real_bytes() -> bytes:
    return REAL.read_bytes()


@pytest.fixture(scope="module")
def real_records(real_bytes) -> list[dict]:
    return list(fastavro.reader(io.BytesIO(real_bytes)))


@pytest.fixture(scope="module")
def survey() -> LsstSurvey:
    return LsstSurvey()


def same(a, b) -> bool:
    """Equality of decoded records, NaN equal to NaN (real packets hold NaN fields)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return type(a) is type(b) and a == b


def packets(items) -> list[dict]:
    items = list(items)
    skips = [i for i in items if isinstance(i, Skip)]
    assert not skips, skips
    return [record for _, record in items]


# -- decoding -------------------------------------------------------------------------------------


def test_the_shipped_versions_are_the_public_ones():
    assert SCHEMA_VERSIONS == VERSIONS


def test_every_real_packet_decodes_from_the_container(survey, real_bytes, real_records):
    got = packets(survey.read(real_bytes, str(REAL)))
    assert len(got) == len(real_records) == 7
    assert same(got, real_records)
    assert [survey.alert_id(p) for p in got] == [r["diaSourceId"] for r in real_records]


def test_concatenated_containers_are_all_read(survey, real_bytes, real_records):
    fake = fake_alert_bytes("11.1")
    got = packets(survey.read(real_bytes + fake + real_bytes, "stream"))
    assert len(got) == 15
    assert same(got[:7], real_records) and same(got[8:], real_records)
    assert same(got[7], next(iter(fastavro.reader(io.BytesIO(fake)))))


def test_every_real_packet_decodes_from_wire_framing(survey, real_records):
    for record in real_records:
        wire = frame(as_rubin(record), "10.0")
        got = packets(survey.read(wire, "kafka"))
        assert len(got) == 1
        (alert,) = got
        assert alert["diaSourceId"] == record["diaSourceId"]
        assert same(alert["diaSource"], record["diaSource"])
        assert same(alert["prvDiaSources"], record["prvDiaSources"])
        for cutout in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
            assert alert[cutout] == record[cutout]
        assert set(alert) == {f["name"] for f in rubin_schema("10.0")["fields"]}  # Rubin's fields only


@pytest.mark.parametrize("version", VERSIONS)
def test_every_schema_version_decodes_in_both_framings(survey, version):
    container = fake_alert_bytes(version)
    (expected,) = list(fastavro.reader(io.BytesIO(container)))
    from_container = packets(survey.read(container, f"fakeAlert {version}"))
    from_wire = packets(survey.read(frame(expected, version), f"wire {version}"))
    assert same(from_container, [expected])
    assert same(from_wire, [expected])
    top = "alertId" if int(version.split(".")[0]) < 8 else "diaSourceId"
    assert top in expected and ({"alertId", "diaSourceId"} - {top}).isdisjoint(expected)
    assert survey.alert_id(from_wire[0]) == expected[top]
    assert survey.source_id(from_wire[0]) == expected["diaSource"]["diaObjectId"]


def test_an_unknown_schema_id_is_an_error_naming_it(survey, real_records):
    wire = frame(as_rubin(real_records[0]), "10.0")
    bad = wire[:1] + (4207).to_bytes(4, "big") + wire[5:]
    with pytest.raises(UnknownSchemaError, match=r"schema id 4207 \(version 42\.7\)"):
        decode_wire(bad, survey.schemas)
    (skip,) = list(survey.read(bad, "kafka"))
    assert isinstance(skip, Skip) and skip.reason == "unknown_schema" and "4207" in skip.detail
    # without the package and without a folder, even 10.0 is unknown, and the message says where it looked
    with pytest.raises(UnknownSchemaError, match="schema id 1000.*no schema place"):
        decode_wire(wire, SchemaStore(package=False))


def test_a_schema_folder_the_user_names(tmp_path, real_records):
    # a complete schema under its id, as a registry serves it (written to a temporary folder only)
    (tmp_path / "1000.avsc").write_text(json.dumps(rubin_schema("10.0")))
    store = SchemaStore(tmp_path, package=False)
    sid, record = decode_wire(frame(as_rubin(real_records[1]), "10.0"), store)
    assert sid == 1000 and record["diaSourceId"] == real_records[1]["diaSourceId"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SchemaStore(tmp_path / "nowhere")


def fits_bytes(*planes, utype="VarianceUncertainty") -> bytes:
    hdus = [fits.PrimaryHDU(np.asarray(planes[0], dtype=">f4"))]
    if len(planes) > 1:
        h = fits.ImageHDU(np.asarray(planes[1], dtype=">f4"), name="UNCERT")
        h.header["UTYPE"] = utype
        hdus.append(h)
    out = io.BytesIO()
    fits.HDUList(hdus).writeto(out)
    return out.getvalue()


def test_damaged_packets_are_skipped_and_counted_by_reason(survey, real_bytes, real_records):
    good = real_records[1]  # a diaObject's alert with a positive flux: passes the cuts
    wire = frame(as_rubin(good), "10.0")
    wrong_id = wire[:1] + (1101).to_bytes(4, "big") + wire[5:]
    not_fits = frame(as_rubin({**good, "cutoutDifference": b"SIMPLE = T but not a FITS file"}), "10.0")
    empty = frame(as_rubin({**good, "cutoutTemplate": b""}), "10.0")
    nan = np.full((30, 30), np.nan)
    all_nan = frame(as_rubin({**good, "cutoutScience": fits_bytes(nan)}), "10.0")
    inputs = [
        ("truncated wire", wire[: len(wire) // 2]),
        ("truncated container", real_bytes[: len(real_bytes) - 1000]),
        ("wrong schema id", wrong_id),
        ("not fits", not_fits),
        ("empty cutout", empty),
        ("all nan", all_nan),
        ("bad framing", b"\x07" + wire[1:]),
        ("empty input", b""),
        ("good", wire),
    ]
    skipped: Counter = Counter({"earlier": 1})  # the caller's Counter: merged into, not replaced
    items = [item for origin, data in inputs for item in survey.read(data, origin)]
    out = list(survey.process(items, skipped))
    whole = [r["diaSource"] for r in real_records[:6]]  # the truncated container's whole alerts
    no_object = sum(not d["diaObjectId"] for d in whole)
    negative = sum(bool(d["diaObjectId"]) and not d["psfFlux"] > 0 for d in whole)
    assert (no_object, negative) == (1, 1)
    assert [a.alert_id for a in out] == [
        r["diaSourceId"] for r in real_records[:6] if r["diaSource"]["diaObjectId"] and r["diaSource"]["psfFlux"] > 0
    ] + [good["diaSourceId"]]
    assert skipped == Counter(
        {
            "earlier": 1,
            "truncated": 2,
            "bad_body": 1,
            "stamp_bad_fits": 1,
            "stamp_empty_stamp": 1,
            "stamp_all_nan": 1,
            "bad_framing": 1,
            "empty_input": 1,
            "cut:dia_object": no_object,
            "cut:positive": negative,
        }
    )


# -- triplets -------------------------------------------------------------------------------------


def hdu(cutout: bytes, name) -> tuple[np.ndarray, fits.Header]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(io.BytesIO(cutout)) as hdul:
            return np.array(hdul[name].data, dtype=np.float64), hdul[name].header.copy()


def centre_fit(a: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((size, size))
    h, w = a.shape
    # place the centre of a on the centre of out (extra pixel after), cropping or padding
    oy, ox = (size - h) // 2, (size - w) // 2
    for y in range(h):
        for x in range(w):
            if 0 <= y + oy < size and 0 <= x + ox < size:
                out[y + oy, x + ox] = a[y, x]
    return out


def unit(a: np.ndarray) -> np.ndarray:
    return a / math.sqrt(float((a**2).sum()))


def passing(survey, records):
    return [r for r in records if survey.failed_cut(r) is None]


def test_real_triplets_equal_an_independent_computation(survey, real_records):
    kept = passing(survey, real_records)
    assert len(kept) == 4
    for record in kept:
        expected = []
        for field in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
            image, _ = hdu(record[field], 0)
            assert image.shape == (30, 30)
            expected.append(unit(centre_fit(np.where(np.isfinite(image), image, 0.0), 63)))
        got = survey.triplet(record)
        assert got.shape == (3, 63, 63) and got.dtype == np.float32
        np.testing.assert_allclose(got, np.stack(expected), rtol=1e-6, atol=1e-9)


def test_crop_and_uncertainty_channel(real_records):
    survey = LsstSurvey(LsstSettings(triplet=TripletSettings(size=20, uncertainty_channel=True)))
    record = passing(survey, real_records)[0]
    got = survey.triplet(record)
    assert got.shape == (4, 20, 20)
    image, _ = hdu(record["cutoutScience"], 0)
    np.testing.assert_allclose(got[0], unit(np.nan_to_num(image)[5:25, 5:25]), rtol=1e-6, atol=1e-9)
    variance, header = hdu(record["cutoutDifference"], "UNCERT")
    assert header["UTYPE"] == "VarianceUncertainty"
    sigma = np.sqrt(np.where(np.isfinite(variance) & (variance >= 0), variance, 0.0))
    np.testing.assert_allclose(got[3], unit(sigma[5:25, 5:25]), rtol=1e-6, atol=1e-9)
    assert LsstSurvey().triplet(record).shape == (3, 63, 63)  # off by default


def test_resampling_to_a_coarser_pixel_scale_is_area_weighted(real_records):
    target, size = 1.01, 9
    survey = LsstSurvey(LsstSettings(triplet=TripletSettings(size=size, pixel_scale=target)))
    record = passing(survey, real_records)[2]
    got = survey.triplet(record)
    image, header = hdu(record["cutoutDifference"], 0)
    native = float(np.sqrt(abs(np.linalg.det(WCS(header).pixel_scale_matrix)))) * 3600
    assert abs(native - 0.2) < 0.002
    n = image.shape[0]
    n_out = round(n * native / target)  # 6 output pixels of 1.01" over 30 of 0.2"
    resampled = np.zeros((n_out, n_out))
    for i in range(n_out):
        for j in range(n_out):
            y0, y1 = (i - n_out / 2) * target, (i + 1 - n_out / 2) * target
            x0, x1 = (j - n_out / 2) * target, (j + 1 - n_out / 2) * target
            total = 0.0
            for y in range(n):
                for x in range(n):
                    py0, py1 = (y - n / 2) * native, (y + 1 - n / 2) * native
                    px0, px1 = (x - n / 2) * native, (x + 1 - n / 2) * native
                    area = max(0.0, min(y1, py1) - max(y0, py0)) * max(0.0, min(x1, px1) - max(x0, px0))
                    total += area * image[y, x]
            resampled[i, j] = total / target**2
    np.testing.assert_allclose(got[2], unit(centre_fit(resampled, size)), rtol=1e-5, atol=1e-8)


def test_nonfinite_pixels_become_zero_and_an_empty_plane_is_skipped(survey, real_records):
    record = dict(passing(survey, real_records)[0])
    image, _ = hdu(record["cutoutScience"], 0)
    holed = image.copy()
    holed[3, 4], holed[10, 11], holed[0, 0] = np.nan, np.inf, -np.inf
    record["cutoutScience"] = fits_bytes(holed)
    got = survey.triplet(record)
    expected = np.where(np.isfinite(holed), holed, 0.0)
    np.testing.assert_allclose(got[0], unit(centre_fit(expected, 63)), rtol=1e-6, atol=1e-9)
    record["cutoutScience"] = fits_bytes(np.zeros((30, 30)))
    skipped: Counter = Counter()
    assert list(survey.process([("zeros", record)], skipped)) == []
    assert skipped == Counter({"stamp_all_zero": 1})


# -- features -------------------------------------------------------------------------------------


def expected_features(record: dict) -> dict[str, float]:
    ds = record["diaSource"]
    t = ds["midpointMjdTai"]
    prv = [p for p in record["prvDiaSources"] or [] if p["midpointMjdTai"] < t]
    times = np.array([t] + [p["midpointMjdTai"] for p in prv])
    fluxes = np.array([ds["psfFlux"]] + [p["psfFlux"] for p in prv])
    pos = fluxes > 0
    mags = 31.4 - 2.5 * np.log10(fluxes[pos])
    t_pos = times[pos]
    order = np.argsort(t_pos, kind="stable")
    mags, t_pos = mags[order], t_pos[order]
    t_peak = t_pos[np.argmin(mags)]  # argmin: the first to reach the minimum
    obj = record["diaObject"]
    return {
        "psf_mag": 31.4 - 2.5 * np.log10(ds["psfFlux"]),
        "psf_mag_err": 2.5 / np.log(10) * ds["psfFluxErr"] / abs(ds["psfFlux"]),
        "snr": ds["snr"],
        "reliability": ds["reliability"],
        "extendedness": ds["extendedness"],
        "is_dipole": float(ds["isDipole"]),
        "psf_chi2_ndata": ds["psfChi2"] / ds["psfNdata"],
        "pixel_flags": float(ds["pixelFlags"]),
        "pixel_flags_saturated_center": float(ds["pixelFlags_saturatedCenter"]),
        "pixel_flags_cr_center": float(ds["pixelFlags_crCenter"]),
        "pixel_flags_interpolated_center": float(ds["pixelFlags_interpolatedCenter"]),
        "pixel_flags_edge": float(ds["pixelFlags_edge"]),
        "band": float("ugrizy".index(ds["band"])),
        "ra": ds["ra"],
        "dec": ds["dec"],
        "science_mag": 31.4 - 2.5 * np.log10(ds["scienceFlux"]) if ds["scienceFlux"] > 0 else np.nan,
        "ndethist": obj["nDiaSources"],
        "ndet_so_far": float(len(times)),
        "age": t - times.min(),
        "peakmag_so_far": mags.min(),
        "maxmag_so_far": mags.max(),
        "days_since_peak": t - t_peak,
        "days_to_peak": t_peak - times.min(),
    }


def test_real_features_equal_an_independent_computation(survey, real_records):
    for record in passing(survey, real_records):
        expected = expected_features(record)
        assert tuple(expected) == FEATURE_NAMES == survey.feature_names
        got = survey.features(record)
        assert got.dtype == np.float32 and got.shape == (len(FEATURE_NAMES),)
        np.testing.assert_allclose(got, np.array(list(expected.values()), dtype=np.float32), rtol=1e-6, equal_nan=True)
        assert np.isfinite(got).all()


def test_history_stops_at_the_alert(survey, real_records):
    record = passing(survey, real_records)[0]
    before = survey.features(record)
    later = dict(record["diaSource"], diaSourceId=1, midpointMjdTai=record["diaSource"]["midpointMjdTai"] + 1.0)
    later["psfFlux"] = 1e9  # far brighter than anything so far, but after the alert
    same_time = dict(later, diaSourceId=2, midpointMjdTai=record["diaSource"]["midpointMjdTai"])
    with_future = {**record, "prvDiaSources": [*record["prvDiaSources"], later, same_time]}
    np.testing.assert_array_equal(survey.features(with_future), before)


def test_fields_an_older_schema_lacks_follow_the_fill_rule(survey):
    (old,) = list(fastavro.reader(io.BytesIO(fake_alert_bytes("7.0"))))
    with pytest.raises(FeatureError, match=r"'is_dipole' needs diaSource\.isDipole.*lsst\.features\.missing"):
        survey.features(old)
    filling = get_survey("lsst", {"features": {"missing": -99.0}})
    got = filling.features(old)
    lacking = {"is_dipole", "science_mag", "ndethist"}  # isDipole, scienceFlux, nDiaSources came with 8.0
    for i, name in enumerate(FEATURE_NAMES):
        assert (got[i] == -99.0) == (name in lacking), name
    assert filling.filled == Counter(
        {"is_dipole:diaSource.isDipole": 1, "science_mag:diaSource.scienceFlux": 1, "ndethist:diaObject.nDiaSources": 1}
    )
    (new,) = list(fastavro.reader(io.BytesIO(fake_alert_bytes("11.1"))))
    filling.features(new)
    assert sum(filling.filled.values()) == 3  # nothing lacking in 11.1


def test_survey_block_defines_every_feature_and_round_trips_json(survey):
    block = json.loads(json.dumps(survey.survey_block()))
    assert block["survey"] == "lsst"
    assert [f["name"] for f in block["metadata_features"]] == list(FEATURE_NAMES)
    assert all(f["formula"] and f["units"] and f["counts"] and f["fields"] for f in block["metadata_features"])
    assert block["triplet"]["channels"] == ["science", "template", "difference"]
    assert block["schema_versions"] == list(VERSIONS)
    with pytest.raises(ValueError, match="unknown key"):
        get_survey("lsst", {"tripplet": {}})
    with pytest.raises(ValueError, match="not one of"):
        get_survey("decam")


def test_docs_print_the_feature_definitions():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "lsst.md").read_text()
    assert feature_table() in doc


# -- a schema registry (a real HTTP server on 127.0.0.1) -------------------------------------------


@pytest.fixture
def registry():
    from schema_registry_server import SchemaRegistryServer

    server = SchemaRegistryServer({1000: rubin_schema("10.0")})
    yield server
    server.close()


def test_schemas_from_a_registry(registry, real_records):
    wire = frame(as_rubin(real_records[1]), "10.0")
    store = SchemaStore(package=False, registry=SchemaRegistry(registry.url, retries=2, backoff_s=0))
    registry.fail_500 = 1  # a passing fault: retried
    sid, record = decode_wire(wire, store)
    assert sid == 1000 and record["diaSourceId"] == real_records[1]["diaSourceId"]
    decode_wire(wire, store)
    assert registry.requests == ["/schemas/ids/1000"] * 2  # the 500, its retry; then the cache answers
    with pytest.raises(UnknownSchemaError, match=f"schema id 1101 .*schema registry {registry.url}"):
        decode_wire(wire[:1] + (1101).to_bytes(4, "big") + wire[5:], store)  # the registry's 404


@pytest.mark.parametrize("fault", ["500", "timeout", "truncated"])
def test_a_failing_registry_stops_the_stream_naming_it(registry, real_records, fault):
    registry.fail_500 = 10 if fault == "500" else 0
    registry.hang = fault == "timeout"
    registry.truncate = fault == "truncated"
    store = SchemaStore(package=False, registry=SchemaRegistry(registry.url, timeout_s=0.5, retries=1, backoff_s=0))
    survey = LsstSurvey()
    survey.schemas = store
    wire = frame(as_rubin(real_records[1]), "10.0")
    expected = {"500": "HTTP 500", "timeout": "(?i)timeout|timed out", "truncated": "(?i)protocol|incomplete|read"}
    with pytest.raises(HttpError, match="LSST schema registry") as info:
        list(survey.read(wire, "kafka"))
    assert re.search(expected[fault], str(info.value)), str(info.value)
    assert len(registry.requests) == 2  # the request and its one retry


def test_a_packet_of_another_survey_is_not_lsst(survey):
    ztf = sorted((Path(__file__).resolve().parents[1] / "data" / "ztf_alerts").glob("*.avro"))[0]
    (skip,) = list(survey.read(ztf.read_bytes(), ztf.name))
    assert isinstance(skip, Skip) and skip.reason == "not_lsst"


def test_the_schema_package_is_found_without_importing_it():
    code = (
        "import sys\n"
        "from alertvision.surveys.lsst.packets import SchemaStore\n"
        "assert SchemaStore().get(1101)['name'] == 'lsst.v11_1.alert'\n"
        "print(sorted(m for m in sys.modules if m.startswith('lsst.alert.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
