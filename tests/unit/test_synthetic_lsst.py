"""The SYNTHETIC Rubin/LSST sky: packets in Rubin's layout that the project's LSST decoder reads, the same
sources as the ZTF simulation, Rubin's fields following from the simulated pixels, determinism, and a tiny
dataset through the real LSST ingest into the data contract, labelled SYNTHETIC."""

from __future__ import annotations

import io
import json
import math
from collections import defaultdict
from pathlib import Path

import fastavro
import numpy as np
import pytest
from astropy.io import fits

from alertvision.config import validate_config
from alertvision.data.contract import open_dataset
from alertvision.data.sources import ingest_lsst
from alertvision.surveys.base import Skip
from alertvision.surveys.lsst import LsstSurvey
from alertvision.surveys.lsst.triplet import decode_cutout
from alertvision.synthetic.lsst import (
    DIA_OBJECT_BASE,
    SYNTHETIC_NOTE,
    dia_object_id,
    scene_packets,
    write_synthetic_lsst_packets,
)
from alertvision.synthetic.lsst_observe import (
    BAND_MODEL,
    BANDS,
    depth,
    new_flux,
    observe_lsst,
)
from alertvision.synthetic.lsst_schema import NAMESPACE, RUBIN_VERSION, alert_schema
from alertvision.synthetic.observe import observe
from alertvision.synthetic.ztf import synthetic_scenes


def synthetic_block(n_sources: int = 24, seed: int = 3, **lsst) -> dict:
    config = validate_config({"data": {"synthetic": {"n_sources": n_sources, "seed": seed, "lsst": lsst}}})
    return config["data"]["synthetic"]


def read_folder(folder: Path) -> list[dict]:
    """Every packet of the folder's containers, through the project's LSST decoder (no skip allowed)."""
    survey = LsstSurvey()
    out = []
    for path in sorted(folder.glob("*.avro")):
        items = list(survey.read(path.read_bytes(), str(path)))
        skips = [i for i in items if isinstance(i, Skip)]
        assert not skips, skips
        out += [record for _, record in items]
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    cfg = synthetic_block()
    folder = tmp_path_factory.mktemp("lsst-packets")
    labels, counts = write_synthetic_lsst_packets(cfg, folder)
    return {"cfg": cfg, "folder": folder, "labels": labels, "counts": counts, "packets": read_folder(folder)}


@pytest.fixture(scope="module")
def population():
    """The detections of a larger population, observed without writing packets (fast)."""
    scenes = synthetic_scenes(synthetic_block(n_sources=160, seed=11))
    return [(scene, observe_lsst(scene, 3.0, 30)[1]) for scene in scenes]


# -- packets -------------------------------------------------------------------------------------------


def test_packets_decode_with_the_lsst_decoder_and_give_triplets_and_features(written):
    packets = written["packets"]
    assert len(packets) == written["counts"]["n_packets"] > 0
    survey = LsstSurvey()  # missing fields are errors: every field a feature reads is in the packets
    for packet in packets:
        assert survey.triplet(packet).shape == (3, 63, 63)
        assert np.isfinite(survey.features(packet)[1:4]).all()  # psf_mag_err, snr, reliability (psf_mag: NaN if < 0)
    assert not survey.filled
    # the uncertainty plane: the difference's variance as a fourth channel
    with_sigma = LsstSurvey.from_config({"triplet": {"uncertainty_channel": True}})
    planes = with_sigma.triplet(packets[0])
    assert planes.shape == (4, 63, 63) and np.isfinite(planes).all() and planes[3].max() > 0


def test_the_schema_follows_rubins_names_and_types(written):
    """Each field of the project's schema has the name and the type Rubin's schema gives it, and a packet padded
    with nulls for Rubin's other fields is a valid record of Rubin's schema."""
    from lsst.alert.packet import Schema, get_schema_path  # the test dependency, read not copied

    major, minor = RUBIN_VERSION.split(".")
    rubin = Schema.from_file(f"{get_schema_path(major, minor)}/lsst.v{major}_{minor}.alert.avsc").definition

    def record(schema: dict, name: str) -> dict:
        t = next(f["type"] for f in schema["fields"] if f["name"] == name)
        return next(x for x in (t if isinstance(t, list) else [t]) if isinstance(x, dict))

    ours = alert_schema()
    for name in ("diaSource", "diaObject"):
        theirs = {f["name"]: f["type"] for f in record(rubin, name)["fields"]}
        mine = record(ours, name)["fields"]
        for f in mine:
            assert f["name"] in theirs, f"{name}.{f['name']} is not one of Rubin's fields"
            assert sorted(map(str, np.atleast_1d(f["type"]))) == sorted(map(str, np.atleast_1d(theirs[f["name"]]))), (
                f"{name}.{f['name']}"
            )
        required = {n for n, t in theirs.items() if not isinstance(t, list)}
        assert required <= {f["name"] for f in mine}, f"{name}: Rubin's required fields are all filled"

    def padded(rec: dict, schema: dict) -> dict:
        out = {}
        for f in schema["fields"]:
            value = rec.get(f["name"])
            sub = next((x for x in np.atleast_1d(f["type"]) if isinstance(x, dict)), None)
            if isinstance(value, dict) and sub is not None and sub.get("type") == "record":
                value = padded(value, sub)
            elif isinstance(value, list) and sub is not None and sub.get("type") == "array":
                value = [padded(v, record(rubin, "diaSource")) for v in value]
            out[f["name"]] = value
        return out

    parsed = fastavro.parse_schema(rubin)
    for packet in written["packets"][:5]:
        assert fastavro.validation.validate(padded(packet, rubin), parsed, raise_errors=True)


def test_packets_and_cutouts_say_synthetic(written):
    path = sorted(written["folder"].glob("*.avro"))[0]
    with open(path, "rb") as fh:
        reader = fastavro.reader(fh)
        assert reader.metadata[f"{NAMESPACE}.note"] == SYNTHETIC_NOTE
        assert reader.writer_schema["name"].startswith(NAMESPACE)
    packet = written["packets"][0]
    with fits.open(io.BytesIO(packet["cutoutScience"])) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "UNCERT", "PSFIMAGE"]
        assert hdul[0].header["SYNTHET"] is True and "SYNTHETIC" in str(hdul[0].header["COMMENT"])
        assert hdul["UNCERT"].header["UTYPE"] == "VarianceUncertainty"
        assert hdul[0].data.shape == hdul["UNCERT"].data.shape == (30, 30)
    assert all(p["diaSourceId"] > DIA_OBJECT_BASE for p in written["packets"])


def test_cutouts_are_rubins_pixels_and_the_configured_size(tmp_path):
    cfg = synthetic_block(n_sources=12, cutout_size=24)
    scene = next(s for s in synthetic_scenes(cfg) if scene_packets(s, cfg))
    packet = scene_packets(scene, cfg)[0]
    for field in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
        cutout = decode_cutout(packet[field], field)
        assert cutout.image.shape == (24, 24) and math.isclose(cutout.scale, 0.2, rel_tol=1e-9)
        assert cutout.variance is not None and (cutout.variance > 0).all()
    # the difference's variance is the science's plus the template's
    sci, tmpl, diff = (decode_cutout(packet[f]) for f in ("cutoutScience", "cutoutTemplate", "cutoutDifference"))
    np.testing.assert_allclose(diff.variance, sci.variance + tmpl.variance, rtol=1e-5)


def test_same_seed_same_bytes_and_another_seed_other_bytes(tmp_path, written):
    again = tmp_path / "again"
    write_synthetic_lsst_packets(written["cfg"], again)
    first = sorted(written["folder"].glob("*.avro"))
    assert [p.read_bytes() for p in first] == [(again / p.name).read_bytes() for p in first]
    other = tmp_path / "other"
    write_synthetic_lsst_packets({**written["cfg"], "seed": written["cfg"]["seed"] + 1}, other)
    assert (other / first[0].name).read_bytes() != first[0].read_bytes()


# -- the same sky as ZTF ------------------------------------------------------------------------------------


def test_the_same_sources_are_seen_by_ztf_and_by_rubin(written):
    """The labels name each Rubin source's ZTF name; a source detected by both surveys is at the same place."""
    cfg = written["cfg"]
    scenes = synthetic_scenes(cfg)
    by_name = {s.object_id: s for s in scenes}
    labels = written["labels"]
    assert set(labels["ztf_objectId"]) <= set(by_name)
    assert (labels["diaObjectId"] == [dia_object_id(by_name[n]) for n in labels["ztf_objectId"]]).all()
    both = 0
    packets_by_object = defaultdict(list)
    for p in written["packets"]:
        packets_by_object[p["diaSource"]["diaObjectId"]].append(p)
    for name, oid in zip(labels["ztf_objectId"], labels["diaObjectId"]):
        rows, _ = observe(by_name[name], cfg["cadence_days"], cfg["nan_patch_rate"], cfg["edge_rate"])
        if rows and packets_by_object[oid]:
            both += 1
            ds = packets_by_object[oid][0]["diaSource"]
            assert abs(ds["dec"] - rows[0]["dec"]) * 3600 < 2.0
            assert ds["midpointMjdTai"] + 2400000.5 >= by_name[name].season_start - 1
    assert both >= 3
    # the labels follow the ZTF simulation's: a source has one label in both surveys
    assert (labels["label"] == (labels["source_set"] == "trues")).all()


def test_rubin_sees_only_its_sky(tmp_path):
    cfg = synthetic_block(n_sources=16, dec_max=0.0)
    scenes = synthetic_scenes(cfg)
    north = {s.object_id for s in scenes if s.dec > 0}
    assert north and len(north) < len(scenes)
    labels, counts = write_synthetic_lsst_packets(cfg, tmp_path)
    assert counts["outside_rubin_sky"] == len(north)
    assert set(labels["ztf_objectId"]) == {s.object_id for s in scenes} - north


# -- Rubin's fields follow the sky ---------------------------------------------------------------------------


def test_depth_follows_from_the_sky_and_the_seeing():
    for band in BANDS:
        zp, dark, seeing, moon = BAND_MODEL[band]
        assert depth(band, seeing, dark) > depth(band, seeing * 1.5, dark) > depth(band, seeing * 1.5, dark - moon)


def _by(population, subset=None, kind=None):
    return [
        d.fields
        for s, dets in population
        for d in dets
        if (subset is None or s.subset == subset) and (kind is None or s.kind == kind)
    ]


def test_bogus_has_lower_reliability_than_real_transients(population):
    trues = [f["reliability"] for f in _by(population, "trues") if f["psfFlux"] > 0]
    rejects = [f["reliability"] for f in _by(population, "rejects") if f["psfFlux"] > 0]
    assert trues and rejects
    assert np.mean(rejects) < np.mean(trues)
    assert 0.0 <= min(trues + rejects) and max(trues + rejects) <= 1.0


def test_dims_have_lower_snr_than_trues(population):
    trues = [f["snr"] for f in _by(population, "trues")]
    dims = [f["snr"] for f in _by(population, "dims")]
    assert np.median(dims) < np.median(trues)


def test_psf_photometry_recovers_the_simulated_flux(population):
    """For supernovae, (psfFlux - true flux) / psfFluxErr is centred on 0 with a spread near 1: the measured
    flux and its error follow from the pixels."""
    pulls = []
    for scene, dets in population:
        if scene.kind != "sn":
            continue
        for d in dets:
            f = d.fields
            if f["pixelFlags_saturatedCenter"] or f["pixelFlags_interpolatedCenter"] or f["snr"] > 200:
                continue
            pulls.append((f["psfFlux"] - new_flux(scene, d.visit.jd, d.visit.band)) / f["psfFluxErr"])
    pulls = np.array(pulls)
    assert len(pulls) > 30
    assert abs(np.median(pulls)) < 0.5 and 0.6 < np.std(pulls) < 1.8


def test_flags_follow_the_pixels(population):
    dipoles = _by(population, kind="dipole")
    sn = _by(population, kind="sn")
    assert np.mean([f["isDipole"] for f in dipoles]) > np.mean([f["isDipole"] for f in sn])
    # a dipole's bright star saturates the detector at its core; a supernova rarely does
    assert np.mean([f["pixelFlags_saturated"] for f in dipoles]) > np.mean([f["pixelFlags_saturated"] for f in sn])
    cosmic = _by(population, kind="cosmic")
    if cosmic:
        assert np.mean([f["pixelFlags_crCenter"] for f in cosmic]) > np.mean([f["pixelFlags_crCenter"] for f in sn])


# -- the dataset ---------------------------------------------------------------------------------------------


def test_a_tiny_synthetic_lsst_dataset_goes_through_the_lsst_ingest(tmp_path, written):
    config = validate_config(
        {
            "data": {"synthetic": {"n_sources": 24, "seed": 3}},
            "splits": {"probabilities": [0.6, 0.2, 0.2]},
            "grid": {"datasets": ["ztf", "lsst"]},
        }
    )
    manifest = ingest_lsst(config, tmp_path / "data", progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # the temporary packets are gone
    data = open_dataset(tmp_path / "data")
    assert manifest["synthetic"] is True and manifest["source"] == "synthetic" and manifest["survey"] == "lsst"
    assert manifest["dataset"] == "lsst"
    assert "SYNTHETIC" in manifest["note"] and any("SYNTHETIC" in n for n in manifest["notes"])
    assert json.loads((tmp_path / "data" / "manifest.json").read_text())["synthetic"] is True
    assert isinstance(data.images, np.memmap) and data.images.shape[1:] == (3, 63, 63)
    # the rows are the written packets that pass the LSST cuts, their triplets and features as the plugin computes
    survey = LsstSurvey()
    by_id = {p["diaSourceId"]: p for p in written["packets"]}
    alerts = data.alerts
    assert set(alerts["alert_id"]) <= set(by_id)
    passing = [p for p in written["packets"] if survey.failed_cut(p) is None]
    assert len(alerts) == len(passing)
    for i, row in alerts.iterrows():
        packet = by_id[row["alert_id"]]
        assert data.images[i].tobytes() == survey.triplet(packet).tobytes()
        np.testing.assert_array_equal(row[list(survey.feature_names)].to_numpy(np.float32), survey.features(packet))
    labels = written["labels"].assign(objectId=lambda d: d["diaObjectId"].astype(str)).set_index("objectId")
    assert (alerts["ztf_objectId"].to_numpy() == labels.loc[alerts["objectId"], "ztf_objectId"].to_numpy()).all()
    assert (alerts["label"].to_numpy() == labels.loc[alerts["objectId"], "label"].to_numpy()).all()
    assert manifest["simulation"]["n_scenes"] == 24 and manifest["simulation"]["n_packets"] == len(by_id)


def test_the_synthetic_legacy_survey_pairs_a_rubin_source_by_its_dia_object_id():
    from alertvision.config import validate_config as full
    from alertvision.synthetic.legacysurvey import synthetic_provider

    config = full({"data": {"synthetic": {"n_sources": 8, "seed": 3}}})
    scenes = synthetic_scenes(config["data"]["synthetic"])
    provide = synthetic_provider(scenes, config["legacysurvey"]["synthetic"])
    covered = [s for s in scenes if provide(s.object_id, s.ra, s.dec) is not None]
    assert covered
    for scene in covered[:2]:
        by_dia = provide(str(dia_object_id(scene)), scene.ra, scene.dec)
        assert np.array_equal(provide(scene.object_id, scene.ra, scene.dec), by_dia)


def test_the_docs_depths_are_the_models():
    text = (Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text()
    quoted = text.split("follow: about ")[1].split(" mag")[0]
    expected = ", ".join(f"{depth(b, BAND_MODEL[b][2], BAND_MODEL[b][1]):.1f}" for b in BANDS)
    assert quoted == expected


@pytest.mark.parametrize("rotation", [0.0, 0.7, 2.5])
def test_the_cutouts_wcs_puts_a_star_where_the_sky_has_it(rotation):
    """A star 1" west and 0.6" north of the source, rendered in the rotated detector frame, is at its sky
    position through the cutout's WCS (the rendering and the header agree on orientation and scale)."""
    from dataclasses import replace
    from types import SimpleNamespace

    from astropy.coordinates import SkyCoord
    from astropy.wcs import WCS

    from alertvision.synthetic.lsst import _wcs_header
    from alertvision.synthetic.lsst_observe import Frame
    from alertvision.synthetic.scene import Star

    scene = replace(
        synthetic_scenes(synthetic_block(n_sources=8))[0], host=None, stars=[Star(1.0, 0.6, 18.0, 0.5, 0.2)]
    )
    centre = (15.2, 14.7)
    img = Frame(scene, "r", 30, rotation, centre).image(0.7)
    y, x = np.unravel_index(np.argmax(img), img.shape)
    det = SimpleNamespace(visit=SimpleNamespace(rotation=rotation), centre=centre)
    header = fits.Header()
    for key, value in _wcs_header(scene, det).items():
        header[key] = value
    seen = WCS(header).pixel_to_world(x, y)
    cosd = math.cos(math.radians(scene.dec))
    truth = SkyCoord(scene.ra - 1.0 / 3600 / cosd, scene.dec + 0.6 / 3600, unit="deg")
    assert seen.separation(truth).arcsec < 0.2  # within a pixel: the peak pixel, not a fitted centroid
