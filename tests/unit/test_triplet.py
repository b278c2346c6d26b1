"""The triplet function on the real packets: shape, channel order, L2 norm, NaN, broken stamps."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from astropy.io import fits

from alertvision.data.triplet import (
    CUTOUT_FIELDS,
    StampError,
    decode_stamp,
    normalize_cutout,
    normalize_triplet,
    triplet_from_alert,
    triplets_from_alerts,
)


def _stamp(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    fits.PrimaryHDU(array.astype(np.float32)).writeto(buf)
    return gzip.compress(buf.getvalue())


def _with_stamp(packet: dict, field: str, data: bytes) -> dict:
    out = dict(packet)
    out[field] = {**packet[field], "stampData": data}
    return out


def test_real_packets_give_normalised_triplets(packets):
    assert len(packets) == 12
    for packet in packets:
        t = triplet_from_alert(packet)
        assert t.shape == (3, 63, 63) and t.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(t.reshape(3, -1), axis=1), 1.0, rtol=1e-5)
        assert np.isfinite(t).all()


def test_channel_order_is_science_reference_difference(packets):
    packet = packets[0]
    t = triplet_from_alert(packet)
    for channel, field in enumerate(CUTOUT_FIELDS):
        raw = decode_stamp(packet[field]["stampData"])
        expected = np.nan_to_num(raw) / np.linalg.norm(np.nan_to_num(raw))
        np.testing.assert_allclose(t[channel], expected, rtol=1e-5, atol=1e-7)
    # the three cutouts differ: a swapped order would be caught
    assert not np.allclose(t[0], t[2])


def test_nan_pixels_become_zero_and_norm_stays_one(packets):
    packet = packets[1]
    raw = decode_stamp(packet["cutoutScience"]["stampData"]).copy()
    raw[10:14, 20:30] = np.nan
    t = triplet_from_alert(_with_stamp(packet, "cutoutScience", _stamp(raw)))
    assert (t[0, 10:14, 20:30] == 0).all()
    assert np.linalg.norm(t[0]) == pytest.approx(1.0, rel=1e-5)


def test_small_stamp_is_padded_at_bottom_right(packets):
    packet = packets[2]
    raw = decode_stamp(packet["cutoutDifference"]["stampData"])[:52, :]
    t = triplet_from_alert(_with_stamp(packet, "cutoutDifference", _stamp(raw)))
    assert (t[2, 52:, :] == 0).all()
    np.testing.assert_allclose(t[2, :52, :], raw / np.linalg.norm(raw), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\x1f\x8b\x08\x00broken gzip", "bad_gzip"),
        (gzip.compress(b"SIMPLE  =  not a fits file at all", mtime=0), "bad_fits"),
        (_stamp(np.full((63, 63), np.nan)), "all_nan"),
        (_stamp(np.zeros((63, 63))), "all_zero"),
        (_stamp(np.ones((70, 63))), "bad_shape"),
    ],
    ids=["bad_gzip", "bad_fits", "all_nan", "all_zero", "bad_shape"],
)
def test_broken_stamp_is_a_clear_error(packets, data, reason):
    broken = _with_stamp(packets[3], "cutoutTemplate", data)
    with pytest.raises(StampError) as err:
        triplet_from_alert(broken)
    assert err.value.reason == reason
    assert "reference" in str(err.value) or reason in ("bad_gzip", "bad_fits")


def test_broken_packets_are_counted_not_fatal(packets):
    broken = _with_stamp(packets[4], "cutoutScience", b"not gzip")
    missing = {k: v for k, v in packets[5].items() if k != "cutoutDifference"}
    images, kept, skipped = triplets_from_alerts([packets[0], broken, missing, packets[6]])
    assert images.shape == (2, 3, 63, 63)
    assert kept == [0, 3]
    assert skipped == {"bad_gzip": 1, "missing_stamp": 1}


def test_normalize_triplet_on_arrays():
    rng = np.random.default_rng(0)
    sci, ref, diff = (rng.normal(size=(63, 63)) for _ in range(3))
    t = normalize_triplet(sci, ref, diff)
    np.testing.assert_allclose(t[1], ref / np.linalg.norm(ref), rtol=1e-5)
    with pytest.raises(StampError):
        normalize_cutout(np.zeros((63, 63)))


def test_a_stamp_decompressing_past_the_cap_is_refused_before_it_takes_the_memory():
    from alertvision.data.triplet import MAX_STAMP_BYTES, StampError, decode_stamp

    half = gzip.compress(bytes(MAX_STAMP_BYTES // 2 + 1))
    for stamp in (gzip.compress(bytes(MAX_STAMP_BYTES + 1)), half + half):  # one gzip member, and two
        assert len(stamp) < 10_000
        with pytest.raises(StampError) as caught:
            decode_stamp(stamp)
        assert caught.value.reason == "too_large"
    with pytest.raises(StampError) as caught:  # under the cap it is read, and is no FITS file
        decode_stamp(gzip.compress(bytes(MAX_STAMP_BYTES // 2)))
    assert caught.value.reason != "too_large"


ZTF_MASKED = np.float32(-3.4e38)  # the value ZTF writes into masked template pixels


def _masked_template(packet: dict, value: np.float32 = ZTF_MASKED) -> tuple[dict, np.ndarray]:
    """``packet`` with a template whose lower-left corner (rows 50-62, columns 0-19) holds ``value``."""
    raw = decode_stamp(packet["cutoutTemplate"]["stampData"]).copy()
    raw[50:, :20] = value
    return _with_stamp(packet, "cutoutTemplate", _stamp(raw)), raw


@pytest.mark.parametrize("value", [ZTF_MASKED, np.float32(np.inf), np.float32(-np.inf)], ids=["ztf", "inf", "-inf"])
def test_masked_pixels_drop_the_alert_by_default_and_are_zeroed_under_zero(packets, value):
    masked, raw = _masked_template(packets[0], value)
    # BTSbot's float32 norm of such a cutout is not finite: its normalised cutout is all zero ("zero image")
    with np.errstate(over="ignore", invalid="ignore"):
        assert not np.isfinite(np.linalg.norm(np.nan_to_num(raw)))
    images, kept, skipped = triplets_from_alerts([packets[1], masked, packets[2]])
    assert kept == [0, 2] and skipped == {"masked_pixels": 1} and images.shape == (2, 3, 63, 63)

    images, kept, skipped = triplets_from_alerts([packets[1], masked, packets[2]], masked_pixels="zero")
    assert kept == [0, 1, 2] and not skipped
    template = images[1, 1]
    assert (template[50:, :20] == 0).all()
    clean = raw.astype(np.float64)
    clean[50:, :20] = 0
    np.testing.assert_allclose(template, clean / np.linalg.norm(clean), rtol=1e-6, atol=1e-8)
    # the other channels are untouched
    np.testing.assert_array_equal(images[1, [0, 2]], triplet_from_alert(packets[0])[[0, 2]])


def test_a_cutout_that_is_only_masked_pixels_is_all_zero_under_zero():
    only_mask = np.where(np.eye(63, dtype=bool), ZTF_MASKED, 0).astype(np.float32)
    with pytest.raises(StampError) as err:
        normalize_cutout(only_mask, masked_pixels="zero")
    assert err.value.reason == "all_zero"
    with pytest.raises(ValueError, match="data.masked_pixels"):
        normalize_cutout(only_mask, masked_pixels="keep")


def test_how_many_real_packets_the_drop_rule_removes(packets):
    """The 12 real packets: the drop rule removes those with a masked pixel, counted independently here."""

    def has_mask(a: np.ndarray) -> bool:  # inf, or a magnitude above 1e19 (NaN compares False)
        return bool((np.isinf(a) | (np.nan_to_num(np.abs(a), nan=0.0) > 1e19)).any())

    with_mask = sum(any(has_mask(decode_stamp(p[f]["stampData"])) for f in CUTOUT_FIELDS) for p in packets)
    _, kept, skipped = triplets_from_alerts(packets)
    assert skipped.get("masked_pixels", 0) == with_mask
    assert len(kept) == 12 - with_mask
    print(f"the drop rule removes {with_mask} of the {len(packets)} real packets")
