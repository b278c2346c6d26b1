"""The fast stamp reader against astropy: bit-equal on the real packets, same outcome on broken stamps.

The oracle, :func:`_astropy_decode`, is ``decode_stamp`` as it was before the fast reader: gzip.decompress
then astropy.io.fits. Every stamp here must give the oracle's array bit for bit (NaN payloads and
-0.0 included) or the oracle's StampError reason.
"""

from __future__ import annotations

import gzip
import io
import random
import zlib

import numpy as np
import pytest
from astropy.io import fits

from alertvision.data import triplet
from alertvision.data.fitsstamp import read_primary_image
from alertvision.data.triplet import CUTOUT_FIELDS, StampError, _decode_with_astropy, decode_stamp


def _astropy_decode(stamp: bytes) -> np.ndarray:
    """decode_stamp before the fast reader: gzip.decompress, then astropy (the fallback kept unchanged)."""
    try:
        raw = gzip.decompress(stamp)
    except (OSError, EOFError, zlib.error) as exc:
        raise StampError("bad_gzip", str(exc)) from exc
    return _decode_with_astropy(raw)


def _outcome(decode, stamp: bytes) -> np.ndarray | str:
    """The decoded array, or the StampError reason."""
    try:
        return decode(stamp)
    except StampError as exc:
        return exc.reason


def _assert_bit_equal(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype == np.float32
    assert got.shape == want.shape
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))  # NaN payloads, -0.0


def _assert_same_outcome(stamp: bytes) -> np.ndarray | str:
    """decode_stamp gives the astropy path's array bit for bit, or its error reason; returns it."""
    want = _outcome(_astropy_decode, stamp)
    got = _outcome(decode_stamp, stamp)
    if isinstance(want, str):
        assert got == want
    else:
        assert isinstance(got, np.ndarray), f"astropy read the stamp, decode_stamp says {got}"
        _assert_bit_equal(got, want)
    return want


def _real_stamps(packets) -> list[bytes]:
    return [packet[field]["stampData"] for packet in packets for field in CUTOUT_FIELDS]


def _card(text: str) -> bytes:
    return text.encode().ljust(80)


def _set_card(raw: bytes, index: int, card: bytes) -> bytes:
    return raw[: index * 80] + card + raw[(index + 1) * 80 :]


def _insert_card(raw: bytes, index: int, card: bytes) -> bytes:
    """Insert before card ``index``, dropping the last (blank) card of the first block."""
    assert raw[2800:2880].strip() == b""
    return raw[: index * 80] + card + raw[index * 80 : 2800] + raw[2880:]


def _fits(hdus: list) -> bytes:
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def raw_stamp(packets) -> bytes:
    """One real stamp, gunzipped: SIMPLE, BITPIX, NAXIS, NAXIS1, NAXIS2, BUNIT, END; 63x63 float32."""
    raw = gzip.decompress(packets[0]["cutoutScience"]["stampData"])
    assert raw[400:480].startswith(b"BUNIT") and raw[480:560].rstrip() == b"END" and len(raw) == 7 * 2880
    return raw


def test_real_stamps_take_the_fast_path_bit_equal(packets):
    stamps = _real_stamps(packets)
    assert len(stamps) == 36
    for stamp in stamps:
        fast = read_primary_image(gzip.decompress(stamp))
        assert fast is not None, "a real ZTF stamp fell back to astropy"
        want = _astropy_decode(stamp)
        _assert_bit_equal(fast, want)
        _assert_bit_equal(decode_stamp(stamp), want)


def test_decode_stamp_does_not_call_astropy_on_real_stamps(packets, monkeypatch):
    def refuse(raw: bytes) -> np.ndarray:
        raise AssertionError("decode_stamp fell back to astropy on a real stamp")

    monkeypatch.setattr(triplet, "_decode_with_astropy", refuse)
    for stamp in _real_stamps(packets):
        assert decode_stamp(stamp).shape == (63, 63)


def test_fast_gunzip_equals_gzip(packets):
    for stamp in _real_stamps(packets):
        assert triplet._gunzip(stamp) == gzip.decompress(stamp)


def test_special_float_bits_survive():
    """NaN payloads (quiet and signalling), -0.0, infinities, subnormals: the same bits as astropy."""
    bits = np.array(
        [0x7FC00000, 0x7FC00001, 0xFFC12345, 0x7F800001, 0x80000000, 0x7F800000, 0xFF800000, 0x00000001, 0x3F800000],
        dtype=np.uint32,
    )
    image = np.resize(bits, (50, 63)).view(np.float32)
    raw = _fits([fits.PrimaryHDU(image)])
    fast = read_primary_image(raw)
    assert fast is not None
    _assert_bit_equal(fast, image)
    _assert_same_outcome(gzip.compress(raw))


@pytest.mark.parametrize("shape", [(50, 63), (63, 41), (1, 1), (63, 63)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_images_written_by_astropy_take_the_fast_path(shape, dtype):
    rng = np.random.default_rng(1)
    image = rng.normal(size=shape).astype(dtype)
    image.flat[::7] = np.nan
    raw = _fits([fits.PrimaryHDU(image)])  # a standard header, with EXTEND = T
    assert read_primary_image(raw) is not None
    want = _assert_same_outcome(gzip.compress(raw))
    assert want.shape == shape


def _broken_raws(raw: bytes) -> dict[str, bytes]:
    """Gunzipped stamps built from a real one, each broken or unusual in one way."""
    data_end = 2880 + 63 * 63 * 4
    rng = np.random.default_rng(7)
    return {
        "truncated_data": raw[: data_end - 1],
        "truncated_half_data": raw[:4000],
        "header_only": raw[:2880],
        "truncated_header": raw[:1000],
        "unpadded_data": raw[:data_end],
        "trailing_block_of_spaces": raw + b" " * 2880,
        "trailing_zeros": raw + b"\0" * 2880,
        "trailing_byte": raw + b"x",
        "no_end": _set_card(raw, 6, _card("")),
        "end_with_trailing_bytes": _set_card(raw, 6, _card("END     = 1")),
        "garbled_naxis1_value": _set_card(raw, 3, _card("NAXIS1  = 'abc'")),
        "naxis1_float": _set_card(raw, 3, _card("NAXIS1  = 63.0")),
        "naxis1_lower_case": _set_card(raw, 3, _card("naxis1  =                   63")),
        "naxis1_shifted": _set_card(raw, 3, _card(" NAXIS1 =                   63")),
        "naxis1_equals_in_keyword": _set_card(raw, 3, _card("NAXIS1= 63")),
        "naxis1_zero": _set_card(raw, 3, _card("NAXIS1  =                    0")),
        "naxis1_negative": _set_card(raw, 3, _card("NAXIS1  =                  -63")),
        "naxis2_smaller": _set_card(raw, 4, _card("NAXIS2  =                   50")),
        "naxis2_duplicated": _insert_card(raw, 5, _card("NAXIS2  =                   50")),
        "naxis_3": _set_card(raw, 2, _card("NAXIS   =                    3")),
        "naxis_3_with_naxis3": _insert_card(
            _set_card(raw, 2, _card("NAXIS   =                    3")), 5, _card("NAXIS3  =                    1")
        ),
        "naxis_1": _set_card(raw, 2, _card("NAXIS   =                    1")),
        "naxis_0": _set_card(raw, 2, _card("NAXIS   =                    0")),
        "bitpix_16": _set_card(raw, 1, _card("BITPIX  =                   16")),
        "bitpix_8": _set_card(raw, 1, _card("BITPIX  =                    8")),
        "bitpix_32": _set_card(raw, 1, _card("BITPIX  =                   32")),
        "bitpix_-64": _set_card(raw, 1, _card("BITPIX  =                  -64")),
        "bitpix_12": _set_card(raw, 1, _card("BITPIX  =                   12")),
        "bitpix_garbled": _set_card(raw, 1, _card("BITPIX  = -3x")),
        "simple_false": _set_card(raw, 0, _card("SIMPLE  =                    F")),
        "simple_missing": _set_card(raw, 0, _card("COMMENT hello")),
        "swapped_cards": _set_card(_set_card(raw, 0, raw[80:160]), 1, raw[:80]),
        "xtension": _set_card(raw, 0, _card("XTENSION= 'IMAGE   '")),
        "groups": _insert_card(raw, 5, _card("GROUPS  =                    T")),
        "bscale_bzero_identity": _insert_card(
            _insert_card(raw, 5, _card("BSCALE  =                  1.0")), 5, _card("BZERO   =                  0.0")
        ),
        "bscale_bzero_scaling": _insert_card(
            _insert_card(raw, 5, _card("BSCALE  =                  2.5")), 5, _card("BZERO   =                 10.0")
        ),
        "blank": _insert_card(raw, 5, _card("BLANK   =                  -99")),
        "extend_true": _insert_card(raw, 5, _card("EXTEND  =                    T")),
        "extend_false": _insert_card(raw, 5, _card("EXTEND  =                    F")),
        "extend_garbled": _insert_card(raw, 5, _card("EXTEND  = maybe")),
        "hierarch": _insert_card(raw, 5, _card("HIERARCH NAXIS1 = 5")),
        "comment_card": _insert_card(raw, 5, _card("COMMENT NAXIS1 = 5, not a keyword")),
        "history_card": _insert_card(raw, 5, _card("HISTORY written by a test")),
        "garbled_bunit": _set_card(raw, 5, _card("BUNIT   = 'DN    ")),
        "non_ascii_header": raw[:420] + b"\xff" + raw[421:],
        "nul_in_header": raw[:420] + b"\0" + raw[421:],
        "random_bytes": rng.integers(0, 256, 20160, dtype=np.uint8).tobytes(),
        "random_after_simple": raw[:80] + rng.integers(32, 127, 20080, dtype=np.uint8).tobytes(),
        "empty": b"",
        "small_50x63_by_astropy": _fits([fits.PrimaryHDU(np.ones((50, 63), np.float32))]),
        "with_image_extension": _fits(
            [fits.PrimaryHDU(np.ones((63, 63), np.float32)), fits.ImageHDU(np.zeros((5, 5), np.float32))]
        ),
        "empty_primary_with_extension": _fits([fits.PrimaryHDU(), fits.ImageHDU(np.ones((63, 63), np.float32))]),
        "cube_by_astropy": _fits([fits.PrimaryHDU(np.ones((2, 63, 63), np.float32))]),
        "int16_by_astropy": _fits([fits.PrimaryHDU(np.arange(63 * 63, dtype=np.int16).reshape(63, 63))]),
        "uint16_by_astropy": _fits([fits.PrimaryHDU(np.arange(63 * 63, dtype=np.uint16).reshape(63, 63))]),
    }


#: broken stamps the fast reader must leave to astropy (the rest it may read, if bit-equal)
MUST_FALL_BACK = {
    "truncated_data",
    "truncated_half_data",
    "header_only",
    "truncated_header",
    "trailing_block_of_spaces",
    "no_end",
    "end_with_trailing_bytes",
    "garbled_naxis1_value",
    "naxis1_lower_case",
    "naxis1_shifted",
    "naxis1_equals_in_keyword",
    "naxis2_duplicated",
    "naxis_3",
    "naxis_3_with_naxis3",
    "bitpix_16",
    "bitpix_-64",
    "simple_false",
    "simple_missing",
    "swapped_cards",
    "bscale_bzero_identity",
    "bscale_bzero_scaling",
    "blank",
    "extend_garbled",
    "hierarch",
    "non_ascii_header",
    "nul_in_header",
    "random_bytes",
    "empty",
    "with_image_extension",
    "cube_by_astropy",
    "int16_by_astropy",
    "uint16_by_astropy",
}
#: and those it must read itself
MUST_BE_FAST = {
    "unpadded_data",
    "extend_true",
    "extend_false",
    "comment_card",
    "history_card",
    "garbled_bunit",
    "small_50x63_by_astropy",
}


def test_broken_case_lists_are_consistent(raw_stamp):
    names = set(_broken_raws(raw_stamp))
    assert MUST_FALL_BACK <= names and MUST_BE_FAST <= names and not MUST_FALL_BACK & MUST_BE_FAST


#: the case names (the cases themselves are built from a real stamp in the test)
BROKEN_NAMES = sorted(_broken_raws(b" " * 20160))


@pytest.mark.parametrize("name", BROKEN_NAMES)
def test_broken_fits_gives_astropys_outcome(raw_stamp, name):
    raw = _broken_raws(raw_stamp)[name]
    fast = read_primary_image(raw)
    if name in MUST_FALL_BACK:
        assert fast is None
    if name in MUST_BE_FAST:
        assert fast is not None
    want = _assert_same_outcome(gzip.compress(raw, mtime=0))
    if fast is not None:
        _assert_bit_equal(fast, want)


def test_broken_stamps_keep_their_reasons(raw_stamp):
    """The known reasons come out as before the fast reader."""
    cases = _broken_raws(raw_stamp)
    expected = {
        "truncated_data": "bad_fits",
        "no_end": "bad_fits",
        "random_bytes": "bad_fits",
        "empty": "bad_fits",
        "empty_primary_with_extension": "no_image",
        "cube_by_astropy": "bad_shape",
    }
    for name, reason in expected.items():
        assert _outcome(decode_stamp, gzip.compress(cases[name])) == reason, name


@pytest.mark.parametrize(
    "name, mangle",
    [
        ("truncated", lambda s: s[: len(s) // 2]),
        ("no_trailer", lambda s: s[:-8]),
        ("short_trailer", lambda s: s[:-3]),
        ("bad_crc", lambda s: s[:-8] + bytes([s[-8] ^ 1]) + s[-7:]),
        ("bad_length", lambda s: s[:-4] + bytes([s[-4] ^ 1]) + s[-3:]),
        ("trailing_garbage", lambda s: s + b"garbage"),
        ("trailing_nuls", lambda s: s + b"\0" * 16),
        ("two_members", lambda s: s + gzip.compress(b"more bytes", mtime=0)),
        (
            "two_members_split",
            lambda s: gzip.compress(gzip.decompress(s)[:2880]) + gzip.compress(gzip.decompress(s)[2880:]),
        ),
        ("bad_magic", lambda s: b"\x1f\x8c" + s[2:]),
        ("bad_method", lambda s: s[:2] + b"\x07" + s[3:]),
        ("reserved_flags", lambda s: s[:3] + bytes([s[3] | 0xE0]) + s[4:]),
        ("garbled_deflate", lambda s: s[:40] + bytes(b ^ 0x55 for b in s[40:80]) + s[80:]),
        ("not_gzip", lambda s: b"not gzip"),
        ("empty", lambda s: b""),
        ("gzip_of_empty", lambda s: gzip.compress(b"", mtime=0)),
        ("header_crc_wrong", lambda s: _with_header_crc(gzip.decompress(s), 0x1234)),
    ],
)
def test_broken_gzip_gives_astropys_outcome(packets, name, mangle):
    _assert_same_outcome(mangle(packets[1]["cutoutTemplate"]["stampData"]))


def _with_header_crc(raw: bytes, crc16: int) -> bytes:
    """A gzip member with the FHCRC flag and the given (wrong) header CRC."""
    body = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = body.compress(raw) + body.flush()
    header = b"\x1f\x8b\x08\x02" + b"\0\0\0\0" + b"\x00\xff" + crc16.to_bytes(2, "little")
    trailer = zlib.crc32(raw).to_bytes(4, "little") + (len(raw) & 0xFFFFFFFF).to_bytes(4, "little")
    return header + deflated + trailer


_TRICKY_CARDS = [
    "BSCALE  = 1.0",
    "BZERO   = 0",
    "BLANK   = -99",
    "EXTEND  = T",
    "EXTEND  = F",
    "EXTEND  = 5",
    "NAXIS3  = 1",
    "GROUPS  = T",
    "PCOUNT  = 0",
    "GCOUNT  = 1",
    "HIERARCH NAXIS1 = 5",
    "NAXIS1= 10",
    "naxis1  = 10",
    " NAXIS1 = 10",
    "CONTINUE  '&'",
    "COMMENT NAXIS1 = 5",
    "END     = 3",
    "ENDX    = 3",
    "END",
    "NAXIS1  = 63.0",
    "NAXIS1  = +63",
    "NAXIS1  = 063 / c",
    "NAXIS1  = 63/c",
    "NAXIS2  = 62 / c",
    "SIMPLE  = F",
    "SIMPLE  = T",
    "XTENSION= 'IMAGE'",
    "BITPIX  = 16",
    "BITPIX  = -64",
    "NAXIS   = 3",
    "NAXIS   = 1",
    "NAXIS2  = 0",
    "        = 5",
    "BUNIT   = 'x",
    "DP1     = 'NAXIS1: 5'",
    "A=B",
    "NAXIS1 =  63",
]
_CHARS = b" =/'TF0123456789-+.ENDXAISBZCLPGHRKCOMTUendxais\x00\xff\n\t"


def _mutate(raw: bytes, rng: random.Random) -> bytes:
    out = bytearray(raw)
    op = rng.randrange(6)
    if op == 0:  # a few characters of the first cards
        for _ in range(rng.randint(1, 3)):
            out[rng.randrange(560)] = rng.choice(_CHARS)
    elif op == 1:  # any byte
        out[rng.randrange(560)] = rng.randrange(256)
    elif op == 2:  # truncation
        del out[rng.randrange(len(out) + 1) :]
    elif op == 3:  # trailing bytes
        out += bytes(rng.randrange(256) for _ in range(rng.choice([1, 79, 80, 2880, 3000])))
    elif op == 4:  # a tricky card, replacing or inserted
        card, index = _card(rng.choice(_TRICKY_CARDS)), rng.randrange(8)
        out = bytearray(_set_card(raw, index, card) if rng.random() < 0.5 else _insert_card(raw, index, card))
    else:  # two cards swapped
        i, j = rng.randrange(7), rng.randrange(7)
        out[i * 80 : i * 80 + 80], out[j * 80 : j * 80 + 80] = raw[j * 80 : j * 80 + 80], raw[i * 80 : i * 80 + 80]
    return bytes(out)


def test_mutated_headers_give_astropys_outcome(packets):
    """Seeded random damage to real stamps: the fast reader returns astropy's array or None, never another."""
    raws = [gzip.decompress(stamp) for stamp in _real_stamps(packets)]
    rng = random.Random(20240611)
    fast_reads = 0
    for _ in range(600):
        raw = _mutate(rng.choice(raws), rng)
        fast = read_primary_image(raw)
        if fast is None:
            continue
        fast_reads += 1
        want = _outcome(_astropy_decode, gzip.compress(raw, mtime=0))
        assert isinstance(want, np.ndarray), f"fast read where astropy says {want}: {raw[:560]!r}"
        _assert_bit_equal(fast, want)
    assert fast_reads > 50  # the damage left some stamps readable: both sides were exercised


def test_read_primary_image_never_raises():
    rng = random.Random(3)
    for n in (0, 1, 79, 80, 2879, 2880, 2881, 20160):
        assert read_primary_image(bytes(rng.randrange(256) for _ in range(n))) is None
    assert read_primary_image(b"SIMPLE  =                    T".ljust(2880)) is None
    assert read_primary_image(memoryview(b"")) is None
