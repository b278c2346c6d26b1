"""legacysurvey.source viewer against a local cutout service, FITS and JPEG: binning, orientation,
channel order, faults, coverage, cache."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import packet_paths
from legacysurvey_server import (
    BACKGROUND,
    EAST_FLUX,
    JPEG_PATH,
    NORTH_FLUX,
    OFFSET_ARCSEC,
    ViewerServer,
    fits_bytes,
    jpeg_bytes,
    position_key,
)

from alertvision.config import validate_config
from alertvision.data.contract import open_dataset
from alertvision.data.ingest.avro import ingest_avro, iter_packets
from alertvision.data.legacysurvey import CutoutUnavailable, cube_to_image, image_product, normalise, source_positions
from alertvision.data.legacysurvey_fetch import (
    FAILURES_FILE,
    JPEG,
    BadCutout,
    LegacySurveyFetchError,
    ViewerFetcher,
    cache_path,
    read_cube,
    read_jpeg,
)
from alertvision.data.sources import ingest_ls


@pytest.fixture(scope="module")
def ztf_dir(tmp_path_factory):
    """The real packets as a ZTF dataset (real sky positions)."""
    root = tmp_path_factory.mktemp("ztf")
    ids = sorted({packet["objectId"] for _, packet in iter_packets(packet_paths()[0].parent)})
    pd.DataFrame(
        {
            "objectId": ids,
            "label": [i % 2 for i in range(len(ids))],
            "source_set": ["trues" if i % 2 else "rejects" for i in range(len(ids))],
        }
    ).to_csv(root / "labels.csv", index=False)
    cfg = validate_config(
        {
            "data": {
                "source": "avro",
                "avro": {"path": str(packet_paths()[0].parent), "labels": str(root / "labels.csv")},
            },
            "grid": {"datasets": ["ztf"]},
            "splits": {"probabilities": [0.5, 0.25, 0.25]},
        }
    )
    ingest_avro(cfg, root / "data", progress=False)
    return root / "data"


@pytest.fixture
def server():
    with ViewerServer(slow_s=1.5) as s:
        yield s


def config(server, cache, ls: dict | None = None, **viewer) -> dict:
    block = {
        "url": server.url,
        "jpeg_url": server.jpeg_url,
        "cache_dir": str(cache),
        "timeout_s": 0.5,
        "backoff_s": 0.0,
        "retries": 3,
        "rate_per_s": 1000.0,
        **viewer,
    }
    return validate_config(
        {
            "data": {"source": "avro", "avro": {"path": "x", "labels": "y"}},
            "legacysurvey": {"source": "viewer", **(ls or {}), "viewer": block},
        }
    )


def positions(ztf_dir) -> pd.DataFrame:
    return source_positions(open_dataset(ztf_dir).alerts).sort_values("objectId").reset_index(drop=True)


def asked(value: float) -> float:
    """A coordinate as the service receives it (6 decimals)."""
    return float(f"{value:.6f}")


def served_jpeg(ra: float, dec: float) -> np.ndarray:
    """The (3, 63, 63) R, G, B values of the JPEG the service answers for a position, decoded by Pillow."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(jpeg_bytes(asked(ra), asked(dec))))).transpose(2, 0, 1)


def test_cutout_is_binned_with_flux_kept_and_oriented_north_up_east_left(server, tmp_path):
    cfg = config(server, tmp_path / "cache")["legacysurvey"]["viewer"]
    fetcher = ViewerFetcher(cfg)
    assert fetcher.fetch_one("ZTF20aaaaaaa", 150.0, 2.5) == "fetched"
    cube = fetcher.provider(set())("ZTF20aaaaaaa", 150.0, 2.5)
    image = cube_to_image(cube)
    assert image.shape == (3, 63, 63)
    np.testing.assert_allclose(image.sum(axis=(1, 2)), cube.sum(axis=(1, 2)), rtol=1e-5)  # 4x4 sums keep flux
    off = int(OFFSET_ARCSEC)  # 1"/px after binning
    for b, band in enumerate("grz"):
        # the northern source sits above the centre (row 0 is north), the eastern one to its left
        sky = 25 * 16 * BACKGROUND[band]  # 5x5 binned pixels of 4x4 background pixels each
        north = image[b, 31 - off - 2 : 31 - off + 3, 29:34].sum() - sky
        east = image[b, 29:34, 31 - off - 2 : 31 - off + 3].sum() - sky
        assert north == pytest.approx(NORTH_FLUX[band], rel=0.05)
        assert east == pytest.approx(EAST_FLUX[band], rel=0.1)
        assert image[b, 31 + off - 2 : 31 + off + 3, 29:34].sum() - sky < 0.01 * NORTH_FLUX[band]  # nothing south
        assert image[b, 29:34, 31 + off - 2 : 31 + off + 3].sum() - sky < 0.01 * EAST_FLUX[band]  # nor west


def test_header_orientation_and_band_order_are_followed():
    from astropy.io import fits

    raw = fits_bytes(10.0, 20.0, "grz", 252, 0.25)
    cube = read_cube(raw)
    with fits.open(io.BytesIO(raw)) as hdul:
        hdul[0].data = hdul[0].data[::-1, ::-1, :]  # bands z, r, g; rows north first
        hdul[0].header["BAND0"], hdul[0].header["BAND2"] = "z", "g"
        hdul[0].header["CD2_2"] = -hdul[0].header["CD2_2"]
        buf = io.BytesIO()
        hdul.writeto(buf)
    np.testing.assert_array_equal(read_cube(buf.getvalue()), cube)
    with pytest.raises(BadCutout, match="not a FITS"):
        read_cube(b"<html>oops</html>")


def test_faults_coverage_and_no_source_fetched_twice(server, tmp_path, ztf_dir, caplog):
    pos = positions(ztf_dir)
    faults = ["no_overlap", "partial", "500_once", "slow_once", "truncated_once", "half_once"]
    for fault, row in zip(faults, pos.itertuples()):
        server.faults[position_key(row.ra, row.dec)] = fault
    cfg = config(server, tmp_path / "cache")
    with caplog.at_level(logging.INFO):
        manifest = ingest_ls(cfg, ztf_dir, tmp_path / "ls", progress=False)
    cov = manifest["coverage"]["sources"]
    assert cov == {"covered": len(pos) - 2, "uncovered_no_overlap": 1, "uncovered_partial": 1}
    assert manifest["fetch"] == {**manifest["fetch"], "fetched": len(pos) - 1, "uncovered": 1, "failed": 0, "cached": 0}
    expected = {"no_overlap": 1, "partial": 1, "500_once": 2, "slow_once": 2, "truncated_once": 2, "half_once": 2}
    for row in pos.itertuples():
        fault = server.faults.get(position_key(row.ra, row.dec))
        assert server.requests_for(row.ra, row.dec) == expected.get(fault, 1), fault
    ls = open_dataset(tmp_path / "ls")
    ztf = open_dataset(ztf_dir).alerts
    dropped = set(pos.objectId[:2])
    assert set(ls.alerts["objectId"]) == set(ztf["objectId"]) - dropped
    ztf_split = ztf.set_index("alert_id").loc[ls.alerts["alert_id"], "split"].to_numpy()
    assert (ls.alerts["split"].to_numpy() == ztf_split).all()
    assert ls.images.shape == (len(ls.alerts), 3, 63, 63) and not (tmp_path / "ls" / FAILURES_FILE).exists()
    # a rerun asks the service nothing and writes the same images
    before = sum(server.counts.values())
    manifest2 = ingest_ls(cfg, ztf_dir, tmp_path / "ls2", progress=False)
    assert sum(server.counts.values()) == before
    assert manifest2["fetch"]["cached"] == len(pos) - 1 and manifest2["fetch"]["uncovered"] == 1
    np.testing.assert_array_equal(open_dataset(tmp_path / "ls2").images, ls.images)


def test_failures_are_listed_and_stop_the_run_only_above_the_share(server, tmp_path, ztf_dir):
    pos = positions(ztf_dir)
    bad = pos.iloc[3]
    server.faults[position_key(bad.ra, bad.dec)] = "500_always"
    cfg = config(server, tmp_path / "cache", max_failed_fraction=0.0)
    with pytest.raises(LegacySurveyFetchError, match=f"1 of {len(pos)} sources.*{FAILURES_FILE}"):
        ingest_ls(cfg, ztf_dir, tmp_path / "ls", progress=False)
    failures = pd.read_csv(tmp_path / "ls" / FAILURES_FILE)
    assert list(failures["objectId"]) == [bad.objectId] and "HTTP 500" in failures["error"].iloc[0]
    assert server.requests_for(bad.ra, bad.dec) == 4  # the first try and 3 retries
    assert not (tmp_path / "ls" / "manifest.json").exists()
    cfg = config(server, tmp_path / "cache", max_failed_fraction=0.2)
    manifest = ingest_ls(cfg, ztf_dir, tmp_path / "ls", progress=False)
    assert manifest["coverage"]["sources"]["failed"] == 1
    assert bad.objectId not in set(open_dataset(tmp_path / "ls").alerts["objectId"])
    # once the service answers again, a rerun asks only for the failed source
    del server.faults[position_key(bad.ra, bad.dec)]
    before = dict(server.counts)
    manifest = ingest_ls(cfg, ztf_dir, tmp_path / "ls", progress=False)
    asked = {k for k in server.counts if server.counts[k] != before.get(k, 0)}
    assert asked == {position_key(bad.ra, bad.dec)} and manifest["coverage"]["sources"].get("failed", 0) == 0
    assert not (tmp_path / "ls" / FAILURES_FILE).exists()


def test_nothing_half_written_is_read(server, tmp_path, caplog, monkeypatch):
    cfg = config(server, tmp_path / "cache")["legacysurvey"]["viewer"]
    path = cache_path(cfg["cache_dir"], cfg["layer"], "ZTF20aaaaaab", 10.0, -5.0)
    path.parent.mkdir(parents=True)
    # a temporary file a crash left behind is not the cache; a broken file under the final name is refetched
    (path.parent / f".{path.name}.x.fits.tmp").write_bytes(b"SIMPLE  = partial")
    fetcher = ViewerFetcher(cfg)
    assert fetcher.fetch_one("ZTF20aaaaaab", 10.0, -5.0) == "fetched"
    path.write_bytes(path.read_bytes()[:5000])
    with caplog.at_level(logging.WARNING):
        assert fetcher.fetch_one("ZTF20aaaaaab", 10.0, -5.0) == "fetched"
    assert "unreadable" in caplog.text and read_cube(path.read_bytes()).shape == (3, 252, 252)
    assert server.requests_for(10.0, -5.0) == 2
    # an interrupted write (Ctrl-C half-way through) leaves nothing under the final name
    target = cache_path(cfg["cache_dir"], cfg["layer"], "ZTF20aaaaaac", 11.0, -5.0)
    real_write = Path.write_bytes

    def half_then_interrupt(self, data):
        real_write(self, data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        fetcher.fetch_one("ZTF20aaaaaac", 11.0, -5.0)
    monkeypatch.undo()
    assert not target.exists() and not list(target.parent.glob(f".{target.name}*"))
    assert fetcher.fetch_one("ZTF20aaaaaac", 11.0, -5.0) == "fetched"


# --- channel order of the FITS product ---------------------------------------------------------


def test_fits_channels_default_to_z_r_g_and_follow_the_config(server, tmp_path, ztf_dir):
    pos = positions(ztf_dir).set_index("objectId")
    cache = tmp_path / "cache"
    manifest = ingest_ls(config(server, cache), ztf_dir, tmp_path / "zrg", progress=False)
    assert (manifest["product"], manifest["channels"], manifest["pixel_scale_arcsec"]) == ("fits", ["z", "r", "g"], 1.0)
    ls = open_dataset(tmp_path / "zrg")
    assert len(ls.alerts) == 12
    for i in (0, len(ls.alerts) - 1):
        p = pos.loc[ls.alerts["objectId"].iloc[i]]
        cube = read_cube(fits_bytes(asked(p.ra), asked(p.dec), "grz", 252, 0.25))  # g, r, z
        np.testing.assert_array_equal(ls.images[i], normalise(cube_to_image(cube)[[2, 1, 0]], "l2"))
    # another order: the same cached cubes, the channels permuted
    before = sum(server.counts.values())
    manifest = ingest_ls(
        config(server, cache, ls={"channels": ["r", "g", "z"]}), ztf_dir, tmp_path / "rgz", progress=False
    )
    assert sum(server.counts.values()) == before and manifest["fetch"]["cached"] == 11
    assert manifest["channels"] == ["r", "g", "z"]
    np.testing.assert_array_equal(open_dataset(tmp_path / "rgz").images, ls.images[:, [1, 2, 0]])


# --- the JPEG product ----------------------------------------------------------------------------


def test_jpeg_query_cache_orientation_and_raw_values(server, tmp_path):
    cfg = config(server, tmp_path / "cache", ls={"product": "jpeg", "normalise": "none"})
    viewer = cfg["legacysurvey"]["viewer"]
    fetcher = ViewerFetcher(viewer, JPEG)
    assert fetcher.fetch_one("ZTF20aaaaaaa", 150.0, 2.5) == "fetched"
    # BTSbot's query: 63 px at 1"/px, bands=griy, on the JPEG endpoint
    assert server.queries == [
        (
            JPEG_PATH,
            {"ra": "150.000000", "dec": "2.500000", "layer": "ls-dr10", "size": "63", "pixscale": "1", "bands": "griy"},
        )
    ]
    path = tmp_path / "cache" / "ls-dr10-jpeg-griy" / "ZTF20aaaaaaa_150.00000+2.50000.jpg"
    assert fetcher.path("ZTF20aaaaaaa", 150.0, 2.5) == path and path.read_bytes() == jpeg_bytes(150.0, 2.5)
    image = image_product(cfg["legacysurvey"]).to_image(fetcher.provider(set())("ZTF20aaaaaaa", 150.0, 2.5))
    assert image.dtype == np.float32 and image.shape == (3, 63, 63)
    np.testing.assert_array_equal(image, served_jpeg(150.0, 2.5))  # R, G, B as decoded, 0-255, no flip
    # north up (row 0 north), east left: the red-heavy source above the centre, the blue-heavy one left of it
    off = int(OFFSET_ARCSEC)
    north, south = image[:, 31 - off, 31], image[:, 31 + off, 31]
    east, west = image[:, 31, 31 - off], image[:, 31, 31 + off]
    assert north[0] - south[0] > 100 and north[0] > north[2]
    assert east[2] - west[2] > 100 and east[2] > east[0]
    assert np.abs(south - west).max() <= 3  # both background
    np.testing.assert_allclose(np.linalg.norm(normalise(image, "l2").reshape(3, -1), axis=1), 1.0, rtol=1e-6)
    # jpeg_bands null leaves the parameter out, and caches apart
    plain = ViewerFetcher({**viewer, "jpeg_bands": None}, JPEG)
    assert plain.fetch_one("ZTF20aaaaaaa", 150.0, 2.5) == "fetched"
    assert server.queries[-1] == (
        JPEG_PATH,
        {"ra": "150.000000", "dec": "2.500000", "layer": "ls-dr10", "size": "63", "pixscale": "1"},
    )
    assert plain.path("ZTF20aaaaaaa", 150.0, 2.5).parent.name == "ls-dr10-jpeg"


def test_read_jpeg_takes_only_a_63px_rgb_jpeg():
    from PIL import Image

    def encode(array: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="JPEG")
        return buf.getvalue()

    good = jpeg_bytes(10.0, 20.0)
    assert read_jpeg(good).shape == (63, 63, 3) and read_jpeg(good).dtype == np.uint8
    for data, message in (
        (b"<html>no</html>", "not a JPEG"),
        (fits_bytes(10.0, 20.0, "grz", 252, 0.25), "not a JPEG"),
        (good[: len(good) // 2], "unreadable JPEG"),
        (encode(np.zeros((64, 64, 3), np.uint8)), r"63x63 RGB JPEG, got RGB \(64, 64, 3\)"),
        (encode(np.zeros((63, 63), np.uint8)), "63x63 RGB JPEG, got L"),
    ):
        with pytest.raises(BadCutout, match=message):
            read_jpeg(data)


def test_jpeg_faults_coverage_and_no_source_fetched_twice(server, tmp_path, ztf_dir):
    pos = positions(ztf_dir)
    faults = ["no_overlap", "partial", "blank", "500_once", "slow_once", "truncated_once", "half_once"]
    for fault, row in zip(faults, pos.itertuples()):
        server.faults[position_key(row.ra, row.dec)] = fault
    cache = tmp_path / "cache"
    cfg = config(server, cache, ls={"product": "jpeg", "normalise": "none"})
    manifest = ingest_ls(cfg, ztf_dir, tmp_path / "ls", progress=False)
    n = len(pos)
    assert n == 11
    assert manifest["coverage"]["sources"] == {
        "covered": 8,
        "uncovered_blank": 1,
        "uncovered_no_overlap": 1,
        "uncovered_partial": 1,
    }
    assert manifest["fetch"] == {
        "product": "jpeg",
        "url": server.jpeg_url,
        "layer": "ls-dr10",
        "query": {"size": "63", "pixscale": "1", "bands": "griy"},
        "cache_dir": str(cache),
        "fetched": 10,
        "cached": 0,
        "uncovered": 1,
        "failed": 0,
    }
    assert (manifest["product"], manifest["channels"], manifest["pixel_scale_arcsec"], manifest["normalise"]) == (
        "jpeg",
        ["R=z", "G=r", "B=g"],
        1.0,
        "none",
    )
    expected = {
        "no_overlap": 1,
        "partial": 1,
        "blank": 1,
        "500_once": 2,
        "slow_once": 2,
        "truncated_once": 2,
        "half_once": 2,
    }
    for row in pos.itertuples():
        fault = server.faults.get(position_key(row.ra, row.dec))
        assert server.requests_for(row.ra, row.dec) == expected.get(fault, 1), fault
    assert {path for path, _ in server.queries} == {JPEG_PATH}
    folder = cache / "ls-dr10-jpeg-griy"
    assert len(list(folder.glob("*.jpg"))) == 10 and len(list(folder.glob("*.nooverlap"))) == 1
    assert not list(folder.glob(".*")) and not (tmp_path / "ls" / FAILURES_FILE).exists()
    # the covered sources' alerts, each with its source's JPEG as decoded: R, G, B, raw 0-255
    ls = open_dataset(tmp_path / "ls")
    assert set(ls.alerts["objectId"]) == set(pos.objectId) - set(pos.objectId[:3])
    assert ls.images.shape == (len(ls.alerts), 3, 63, 63) and len(ls.alerts) == 9
    by_id = pos.set_index("objectId")
    for i, object_id in enumerate(ls.alerts["objectId"]):
        p = by_id.loc[object_id]
        np.testing.assert_array_equal(ls.images[i], served_jpeg(p.ra, p.dec))
    # a rerun asks the service nothing: the JPEGs and the 'no overlap' are remembered
    before = sum(server.counts.values())
    manifest2 = ingest_ls(cfg, ztf_dir, tmp_path / "ls2", progress=False)
    assert sum(server.counts.values()) == before
    assert (manifest2["fetch"]["cached"], manifest2["fetch"]["uncovered"], manifest2["fetch"]["fetched"]) == (10, 1, 0)
    assert manifest2["coverage"]["sources"] == manifest["coverage"]["sources"]
    np.testing.assert_array_equal(open_dataset(tmp_path / "ls2").images, ls.images)


def test_jpeg_failures_are_retried_listed_and_dropped(server, tmp_path, ztf_dir):
    pos = positions(ztf_dir)
    undecodable, broken = pos.iloc[4], pos.iloc[7]
    server.faults[position_key(undecodable.ra, undecodable.dec)] = "half_always"
    server.faults[position_key(broken.ra, broken.dec)] = "500_always"
    cfg = config(server, tmp_path / "cache", ls={"product": "jpeg"}, max_failed_fraction=0.2)
    fetcher = ViewerFetcher(cfg["legacysurvey"]["viewer"], JPEG)
    with pytest.raises(CutoutUnavailable, match="unreadable answer after 3 retries: unreadable JPEG"):
        fetcher.fetch_one(undecodable.objectId, undecodable.ra, undecodable.dec)
    assert server.requests_for(undecodable.ra, undecodable.dec) == 4  # the first try and 3 retries
    assert not fetcher.path(undecodable.objectId, undecodable.ra, undecodable.dec).exists()
    manifest = ingest_ls(cfg, ztf_dir, tmp_path / "ls", progress=False)
    assert manifest["coverage"]["sources"] == {"covered": 9, "failed": 2}
    assert (manifest["fetch"]["fetched"], manifest["fetch"]["failed"]) == (9, 2)
    failures = pd.read_csv(tmp_path / "ls" / FAILURES_FILE).set_index("objectId")["error"]
    assert sorted(failures.index) == sorted([undecodable.objectId, broken.objectId])
    assert failures[undecodable.objectId].startswith("unreadable answer after 3 retries: unreadable JPEG")
    assert "HTTP 500" in failures[broken.objectId] and server.requests_for(broken.ra, broken.dec) == 4
    # normalise l2 (the default): every channel of every image has unit norm
    images = open_dataset(tmp_path / "ls").images
    np.testing.assert_allclose(np.linalg.norm(images.reshape(len(images), 3, -1), axis=2), 1.0, rtol=1e-5)
    # above the share, the run stops
    with pytest.raises(LegacySurveyFetchError, match="2 of 11 sources"):
        ingest_ls(
            config(server, tmp_path / "cache", ls={"product": "jpeg"}, max_failed_fraction=0.1),
            ztf_dir,
            tmp_path / "ls3",
            progress=False,
        )
