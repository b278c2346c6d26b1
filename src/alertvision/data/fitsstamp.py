"""A fast reader for the primary image of a small FITS file, bit-equal to astropy, for ZTF alert stamps.

Decoding a stamp with ``astropy.io.fits`` costs far more than the stamp is worth (a ZTF cutout is
one 63x63 float32 image behind a one-block header). :func:`read_primary_image` parses that simple
layout straight from the bytes and returns what ``np.array(hdul[0].data, dtype=np.float32)``
returns. It is deliberately narrow: anything it is not sure astropy would read the same way gives
``None``, and the caller falls back to astropy (see ``alertvision.data.triplet.decode_stamp``).

Accepted: a header of whole 2880-byte blocks of printable ASCII 80-character cards; ``SIMPLE = T``
as the first card (free format, as ZTF writes it); ``BITPIX`` -32 or -64; ``NAXIS = 2`` with
``NAXIS1``/``NAXIS2`` >= 1; ``EXTEND``, if present, ``T`` or ``F``; any other keyword (``BUNIT``,
``COMMENT``...) ignored; the exact ``END`` card on a card boundary; the data right after the header's
last block, complete, followed by nothing but its own padding. Refused (``None``): ``BSCALE``,
``BZERO``, ``BLANK``, ``GROUPS``, ``PCOUNT``, ``GCOUNT``, ``XTENSION``, ``HIERARCH``, other ``NAXISn``,
integer ``BITPIX``, a structural keyword repeated or written out of the standard form (lower case,
shifted, ``=`` out of column 9), a card that starts with ``END`` but is not the END card, bytes after
the padded data (astropy would try to read them as a second HDU).
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["read_primary_image"]

BLOCK = 2880
CARD = 80
_END_CARD = b"END" + b" " * 77
_VALUE_INDICATOR = b"= "
#: big-endian dtypes of the BITPIX values this reader accepts (floats: astropy returns them unscaled)
_DTYPES = {-32: np.dtype(">f4"), -64: np.dtype(">f8")}
#: keywords whose value is read (canonical 8-byte form -> name)
_READ = {kw.ljust(8).encode(): kw for kw in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND")}
#: a card whose first 8 bytes (upper-cased) hold one of these, and that is not one of _READ in
#: standard form, means a layout this reader does not handle
_WATCHED = (
    b"SIMPLE",
    b"BITPIX",
    b"NAXIS",
    b"EXTEND",
    b"BSCALE",
    b"BZERO",
    b"BLANK",
    b"GROUPS",
    b"PCOUNT",
    b"GCOUNT",
    b"XTENSION",
    b"HIERARCH",
)
#: the bytes a header may hold (printable ASCII); anything else goes to astropy, which replaces or rejects it
_PRINTABLE = bytes(range(0x20, 0x7F))
# values after "= ": an integer or a logical, optional comment; nothing else is accepted
_INT_VALUE = re.compile(rb" *([+-]?[0-9]{1,9}) *(?:/.*)?")
_LOGICAL_VALUE = re.compile(rb" *([TF]) *(?:/.*)?")


def _header_values(raw: bytes) -> tuple[dict[str, bytes], int] | None:
    """The value fields of the _READ keywords and the data offset, or None for any other layout."""
    values: dict[str, bytes] = {}
    size = len(raw)
    offset = 0
    while offset + CARD <= size:
        card = raw[offset : offset + CARD]
        if card == _END_CARD:
            data_start = offset + CARD + (-(offset + CARD) % BLOCK)
            if data_start > size or raw[:data_start].translate(None, _PRINTABLE):
                return None
            return values, data_start
        if card.startswith(b"END"):
            return None  # astropy may take a malformed END card for the end of the header
        key = card[:8]
        name = _READ.get(key) if card[8:10] == _VALUE_INDICATOR else None
        if name is not None:
            if name in values:
                return None  # astropy's parsers disagree on which of two cards wins
            values[name] = card[10:]
        else:
            upper = key.upper()
            if any(word in upper for word in _WATCHED) or b"=" in key:
                return None
        if offset == 0 and name != "SIMPLE":
            return None
        offset += CARD
    return None  # no END card


def _int(field: bytes) -> int | None:
    match = _INT_VALUE.fullmatch(field)
    return int(match.group(1)) if match else None


def read_primary_image(raw: bytes) -> np.ndarray | None:
    """The primary image of an uncompressed FITS file as float32 (NAXIS2, NAXIS1), bit-equal to what
    astropy returns after ``np.array(data, dtype=np.float32)``; None where astropy must decide."""
    try:
        if not isinstance(raw, bytes):
            raw = bytes(raw)
        parsed = _header_values(raw)
        if parsed is None:
            return None
        values, data_start = parsed
        if set(values) - {"EXTEND"} != {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2"}:
            return None
        simple = _LOGICAL_VALUE.fullmatch(values["SIMPLE"])
        if simple is None or simple.group(1) != b"T":
            return None
        if "EXTEND" in values and _LOGICAL_VALUE.fullmatch(values["EXTEND"]) is None:
            return None
        bitpix, naxis = _int(values["BITPIX"]), _int(values["NAXIS"])
        width, height = _int(values["NAXIS1"]), _int(values["NAXIS2"])
        dtype = _DTYPES.get(bitpix) if bitpix is not None else None
        if dtype is None or naxis != 2 or width is None or height is None or width < 1 or height < 1:
            return None
        nbytes = width * height * dtype.itemsize
        end = data_start + nbytes
        if len(raw) < end or len(raw) > end + (-nbytes % BLOCK):
            return None  # truncated data, or bytes astropy would read as a further HDU
        image = np.frombuffer(raw, dtype=dtype, count=width * height, offset=data_start).reshape(height, width)
        return np.array(image, dtype=np.float32)
    except Exception:  # garbage must never raise here: astropy gets the last word
        return None
