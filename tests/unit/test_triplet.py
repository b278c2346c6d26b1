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
