"""ZTF cutout triplets: decode the gzipped FITS stamps and normalise them as BTSbot does.

One function, :func:`normalize_triplet`, turns three cutouts into the model input, whatever the
source (Avro packets, Kowalski, the synthetic generator, ``alertvision predict``): each cutout as
stored in its FITS file (no flip), read as float32, then in float64: masked pixels handled by the
``masked_pixels`` rule, NaN -> 0, a stamp smaller than 63x63 padded with 0 at the bottom/right
(the end of each array axis), divided by its own L2 norm, cast to float32; channel order
[science, reference, difference], float32 (3, 63, 63). An alert that cannot become a model input
is rejected with :class:`StampError`, which callers count as a skip under its reason.

Masked pixels (:func:`masked_mask`): ZTF templates can hold pixels at -3.4e38 (masked), and a
stamp can hold +-inf. BTSbot's L2 norm runs in the cutout's float32: one such pixel overflows it,
the normalised cutout becomes all zeros and BTSbot drops the alert ("zero image"). A float64 norm
would keep it with a cutout that is only the mask. ``masked_pixels: drop`` (the default, as BTSbot)
rejects the alert (reason ``masked_pixels``); ``zero`` sets masked pixels to 0 before the norm.
BTSbot also checks ``median == np.nan``, which never holds (NaN equals nothing): alertvision
instead rejects a cutout with no finite pixel (``all_nan``) and one that is all zero after the
rules above (``all_zero``).
"""

from __future__ import annotations

import gzip
import io
import warnings
import zlib
from collections import Counter
from typing import Any, Iterable, Mapping

import numpy as np

from alertvision.data.contract import IMAGE_SIZE
from alertvision.data.fitsstamp import read_primary_image

CUTOUT_FIELDS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")
#: The most bytes a stamp may decompress to: a ZTF cutout is one 63x63 image behind a one-block header
#: (about 35 KB as float64); anything far larger is no cutout and is refused (``stamp_too_large``)
#: before it takes the memory it asks for.
MAX_STAMP_BYTES = 1 << 20
CHANNELS = ("science", "reference", "difference")
#: What ``data.masked_pixels`` may be: drop the alert (BTSbot), or set masked pixels to 0 before the norm.
MASKED_PIXEL_RULES = ("drop", "zero")
#: A pixel whose magnitude exceeds this is masked: above sqrt(float32 max) ~ 1.8e19, one such pixel alone
#: overflows a float32 L2 norm; ZTF's masked value is -3.4e38.
MASK_LIMIT = 1e19


class StampError(ValueError):
    """A cutout that cannot become a model input; ``reason`` is a short key for skip counts."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _gunzip(stamp: bytes, limit: int = MAX_STAMP_BYTES) -> bytes:
    """gzip.decompress, through one zlib call where the stamp is a clean single-member gzip stream;
    :class:`StampError` ``too_large`` where it decompresses to more than ``limit`` bytes."""
    try:
        inflater = zlib.decompressobj(31)  # 16 + MAX_WBITS: gzip wrapper, CRC and length checked
        raw = inflater.decompress(stamp, limit + 1)
        if len(raw) > limit:
            raise StampError("too_large", f"stamp decompresses to more than {limit} bytes")
        if inflater.eof and not inflater.unused_data:
            return raw
    except zlib.error:
        pass
    # several members, trailing bytes, a truncated or broken stream: gzip decides, and raises as before
    with gzip.GzipFile(fileobj=io.BytesIO(stamp)) as fh:
        raw = fh.read(limit + 1)
    if len(raw) > limit:
        raise StampError("too_large", f"stamp decompresses to more than {limit} bytes")
    return raw


def decode_stamp(stamp: bytes) -> np.ndarray:
    """Gunzip a ZTF stamp and read the image of its primary HDU as float32.

    The simple layout of a ZTF cutout is read directly (:func:`alertvision.data.fitsstamp.read_primary_image`,
    bit-equal to astropy); anything else goes through astropy, which decides the error reason."""
    try:
        raw = _gunzip(stamp)
    except (OSError, EOFError, zlib.error) as exc:
        raise StampError("bad_gzip", str(exc)) from exc
    data = read_primary_image(raw)
    if data is not None:
        return data
    return _decode_with_astropy(raw)


def _decode_with_astropy(raw: bytes) -> np.ndarray:
    """The primary HDU's image of an uncompressed FITS file read by astropy, as float32."""
    from astropy.io import fits  # deferred: astropy is heavy

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # real stamps carry a non-standard SIMPLE card
            with fits.open(io.BytesIO(raw), memmap=False) as hdul:
                data = hdul[0].data
                if data is None:
                    raise StampError("no_image", "primary HDU holds no data")
                data = np.array(data, dtype=np.float32)
    except StampError:
        raise
    except Exception as exc:  # astropy raises several types for a broken FITS
        raise StampError("bad_fits", f"{type(exc).__name__}: {exc}") from exc
    if data.ndim != 2:
        raise StampError("bad_shape", f"stamp has {data.ndim} dimensions")
    return data


def check_masked_pixels(rule: str) -> str:
    """``rule`` if it is one of :data:`MASKED_PIXEL_RULES`, else a ValueError naming the config key."""
    if rule not in MASKED_PIXEL_RULES:
        raise ValueError(
            f"masked_pixels {rule!r} is not one of {', '.join(MASKED_PIXEL_RULES)} (config key data.masked_pixels)"
        )
    return rule


def masked_mask(cutout: np.ndarray) -> np.ndarray:
    """Where ``cutout`` holds masked pixels: +-inf, or a magnitude above :data:`MASK_LIMIT` (NaN is not masked)."""
    with np.errstate(invalid="ignore"):
        return np.isinf(cutout) | (np.abs(cutout) > MASK_LIMIT)


def normalize_cutout(cutout: np.ndarray, size: int = IMAGE_SIZE, masked_pixels: str = "drop") -> np.ndarray:
    """Masked pixels by ``masked_pixels`` (see the module docstring), NaN -> 0, pad to size x size with 0 at
    the bottom/right, divide by the float64 L2 norm, float32."""
    check_masked_pixels(masked_pixels)
    cutout = np.array(cutout, dtype=np.float64)
    if cutout.ndim != 2:
        raise StampError("bad_shape", f"cutout has {cutout.ndim} dimensions")
    h, w = cutout.shape
    if h > size or w > size:
        raise StampError("bad_shape", f"cutout of {h}x{w} is larger than {size}x{size}")
    if not np.isfinite(cutout).any():
        raise StampError("all_nan", "cutout holds no finite pixel")
    masked = masked_mask(cutout)
    if masked.any():
        if masked_pixels == "drop":
            raise StampError(
                "masked_pixels",
                f"{int(masked.sum())} masked pixel(s) (inf or |value| > {MASK_LIMIT:g}, e.g. ZTF's -3.4e38); "
                "data.masked_pixels: zero keeps such alerts with those pixels set to 0",
            )
        cutout[masked] = 0.0
    cutout = np.nan_to_num(cutout, nan=0.0)
    if h < size or w < size:
        cutout = np.pad(cutout, [(0, size - h), (0, size - w)], mode="constant", constant_values=0.0)
    norm = np.linalg.norm(cutout)
    if norm == 0:
        raise StampError("all_zero", "cutout is all zero")
    return (cutout / norm).astype(np.float32)


def normalize_triplet(
    science: np.ndarray, reference: np.ndarray, difference: np.ndarray, masked_pixels: str = "drop"
) -> np.ndarray:
    """Three cutouts -> float32 (3, 63, 63) in [science, reference, difference] order."""
    out = np.empty((3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for i, (name, cutout) in enumerate(zip(CHANNELS, (science, reference, difference))):
        try:
            out[i] = normalize_cutout(cutout, masked_pixels=masked_pixels)
        except StampError as exc:
            raise StampError(exc.reason, f"{name} {exc}") from None
    return out


def _stamp_bytes(alert: Mapping[str, Any], field: str) -> bytes:
    cutout = alert.get(field)
    if cutout is None:
        raise StampError("missing_stamp", f"{field} is absent")
    data = cutout.get("stampData") if isinstance(cutout, Mapping) else cutout
    if not isinstance(data, (bytes, bytearray)):
        raise StampError("missing_stamp", f"{field} holds no stamp bytes")
    return bytes(data)


def triplet_from_alert(alert: Mapping[str, Any], masked_pixels: str = "drop") -> np.ndarray:
    """The normalised triplet of one ZTF alert packet (a dict as fastavro or Kowalski gives it)."""
    stamps = [decode_stamp(_stamp_bytes(alert, f)) for f in CUTOUT_FIELDS]
    return normalize_triplet(*stamps, masked_pixels=masked_pixels)


def triplets_from_alerts(
    alerts: Iterable[Mapping[str, Any]], masked_pixels: str = "drop"
) -> tuple[np.ndarray, list[int], Counter]:
    """Triplets of many packets: (array (n_kept, 3, 63, 63), kept indices, skip counts by reason)."""
    kept: list[int] = []
    images: list[np.ndarray] = []
    skipped: Counter = Counter()
    for i, alert in enumerate(alerts):
        try:
            images.append(triplet_from_alert(alert, masked_pixels))
        except StampError as exc:
            skipped[exc.reason] += 1
            continue
        kept.append(i)
    array = np.stack(images) if images else np.empty((0, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    return array, kept, skipped


def stamp_contract(masked_pixels: str = "drop") -> dict:
    """The stamp rules of :func:`triplet_from_alert`, machine-readable, for a broker that rebuilds the triplet
    without alertvision (the export's ``alertvision.stamps``)."""
    return {
        "fields": dict(zip(CHANNELS, CUTOUT_FIELDS)),
        "stamp_key": "stampData",
        "channel_order": list(CHANNELS),
        "decode": "stampData is a gzip-compressed FITS file; the image is its primary HDU's data as "
        "astropy.io.fits returns it, cast to float32",
        "flip": False,
        "orientation": "as stored: array row i is FITS image row i+1, column j is FITS column j+1 (no flip, "
        "no transpose)",
        "compute_dtype": "float64",
        "masked_pixels": {
            "rule": check_masked_pixels(masked_pixels),
            "limit": MASK_LIMIT,
            "definition": "a pixel that is +inf, -inf or whose |value| > limit (ZTF writes -3.4e38 into masked "
            "template pixels); NaN is not masked",
            "drop": "a cutout with a masked pixel drops the alert (as BTSbot, whose float32 L2 norm overflows "
            "and leaves an all-zero image it drops)",
            "zero": "masked pixels are set to 0.0 before the norm",
        },
        "nan": {"value": 0.0, "note": "NaN pixels -> 0.0, after the masked-pixel rule"},
        "no_finite_pixel": "drop",
        "size": IMAGE_SIZE,
        "smaller": {
            "pad_value": 0.0,
            "where": "end",
            "note": "padded after the last row and the last column (numpy.pad [(0, 63 - h), (0, 63 - w)]), "
            "before the norm",
        },
        "larger": "drop",
        "not_2d": "drop",
        "norm": {
            "kind": "l2",
            "dtype": "float64",
            "formula": "x / sqrt(sum(x ** 2)) over the 63x63 cutout after the steps above",
            "why_float64": "a float32 norm overflows on a masked pixel; with the masked-pixel rule above the "
            "two agree to float32 rounding",
        },
        "zero_norm": "drop",
        "missing_stamp": "drop",
        "output": "float32 (3, 63, 63), the cast after the division",
        "dropped_alerts": "not scored; alertvision predict counts them by reason (stamp_<reason>)",
    }
