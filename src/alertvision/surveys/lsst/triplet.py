"""Rubin/LSST cutout triplets: three uncompressed FITS cutouts -> the model's image input.

Each Rubin cutout (``cutoutScience``, ``cutoutTemplate``, ``cutoutDifference``) is an uncompressed FITS
file with three HDUs: the image (PRIMARY, nJy), its uncertainty (UNCERT; ``UTYPE =
'VarianceUncertainty'`` in the real packets) and the PSF (PSFIMAGE). The real packets hold 30x30
pixels at 0.2"/px (6"), in the detector's orientation (the rotator angle ``ROTPA`` varies between
visits); the size may vary. The rule, per cutout, in this order:

1. **non-finite pixels** (masked pixels arrive as NaN): a cutout with no finite pixel is skipped
   (``all_nan``); otherwise NaN and +-inf -> 0, as for ZTF.
2. **pixel scale**: ``pixel_scale`` None keeps the native pixels. A number (arcsec/px, e.g. ZTF's
   1.01) resamples around the cutout's centre by exact area overlap: an output pixel is the
   area-weighted mean of the native pixels it covers, the native scale taken from the header's WCS
   (``CDELTi * PCi_j`` or ``CDi_j``: sqrt(|det|) * 3600) or, without one, Rubin's nominal 0.2"/px.
   Output pixels beyond the cutout get 0. The uncertainty plane is resampled as a variance
   (weights squared).
3. **size**: centred zero-padding (a smaller cutout; the extra pixel of an odd difference goes after)
   or a centred crop (a larger one) to ``size`` x ``size``.
4. **normalisation**: each plane divided by its own L2 norm, as for ZTF; an all-zero plane is skipped
   (``all_zero``).

Channels: [science, template, difference], plus, with ``uncertainty_channel``, the difference cutout's
uncertainty as a standard deviation (sqrt of the variance; negative variance counts as non-finite).
Orientation: as stored (the FITS array as astropy reads it, row 0 = first FITS row), not rotated.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from alertvision.data.contract import IMAGE_SIZE
from alertvision.data.triplet import StampError
from alertvision.surveys.base import TripletSpec

CUTOUT_FIELDS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")
CHANNELS = ("science", "template", "difference")
UNCERTAINTY_CHANNEL = "difference_sigma"
#: Rubin's nominal pixel scale (arcsec/px), used where a cutout carries no WCS
NOMINAL_PIXEL_SCALE = 0.2


@dataclass(frozen=True)
class TripletSettings:
    """``size``: output pixels per side; ``pixel_scale``: arcsec/px to resample to, None for native;
    ``uncertainty_channel``: add the difference cutout's uncertainty as a fourth channel."""

    size: int = IMAGE_SIZE
    pixel_scale: float | None = None
    uncertainty_channel: bool = False

    def __post_init__(self) -> None:
        if int(self.size) < 1:
            raise ValueError(f"lsst.triplet.size {self.size!r} must be a positive number of pixels")
        if self.pixel_scale is not None and not (math.isfinite(self.pixel_scale) and self.pixel_scale > 0):
            raise ValueError(f"lsst.triplet.pixel_scale {self.pixel_scale!r} must be a positive arcsec/px or null")

    def spec(self) -> TripletSpec:
        channels = CHANNELS + ((UNCERTAINTY_CHANNEL,) if self.uncertainty_channel else ())
        cutouts = CUTOUT_FIELDS + (("cutoutDifference[UNCERT]",) if self.uncertainty_channel else ())
        return TripletSpec(
            channels=channels,
            cutouts=cutouts,
            size=int(self.size),
            pixel_scale="native (0.2 arcsec/px)" if self.pixel_scale is None else f"{self.pixel_scale} arcsec/px",
            orientation="as stored: detector axes, rotated by ROTPA on the sky (not north-up)",
            nonfinite="a cutout without a finite pixel is skipped (all_nan); NaN and inf -> 0",
            fit="resample by exact area overlap about the centre (if pixel_scale), then centred zero-pad "
            "or centred crop to size",
            normalisation="each plane divided by its own L2 norm; an all-zero plane is skipped (all_zero)",
        )


@dataclass(frozen=True)
class Cutout:
    """One decoded cutout: the image, its variance (None without an uncertainty HDU of a known UTYPE),
    the native pixel scale in arcsec/px and the UNCERT HDU's UTYPE (None without one)."""

    image: np.ndarray
    variance: np.ndarray | None
    scale: float
    uncertainty_kind: str | None = None


def _scale_from_header(header: Any) -> float:
    if "CD1_1" in header:
        m = np.array(
            [[header.get("CD1_1", 0.0), header.get("CD1_2", 0.0)], [header.get("CD2_1", 0.0), header.get("CD2_2", 0.0)]]
        )
    elif "PC1_1" in header or "CDELT1" in header:
        pc = np.array(
            [[header.get("PC1_1", 1.0), header.get("PC1_2", 0.0)], [header.get("PC2_1", 0.0), header.get("PC2_2", 1.0)]]
        )
        m = np.diag([header.get("CDELT1", 1.0), header.get("CDELT2", 1.0)]) @ pc
    else:
        return NOMINAL_PIXEL_SCALE
    scale = math.sqrt(abs(float(np.linalg.det(m)))) * 3600.0
    return scale if math.isfinite(scale) and scale > 0 else NOMINAL_PIXEL_SCALE


def decode_cutout(data: Any, field: str = "cutout") -> Cutout:
    """A Rubin cutout's bytes -> :class:`Cutout`; raises :class:`StampError` (``missing_stamp``,
    ``empty_stamp``, ``bad_fits``, ``no_image``, ``bad_shape``)."""
    if data is None:
        raise StampError("missing_stamp", f"{field} is absent")
    if not isinstance(data, (bytes, bytearray)):
        raise StampError("missing_stamp", f"{field} holds no bytes")
    if not data:
        raise StampError("empty_stamp", f"{field} holds 0 bytes")
    from astropy.io import fits  # deferred: astropy is heavy

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(bytes(data)), memmap=False) as hdul:
                if hdul[0].data is None:
                    raise StampError("no_image", f"{field}: primary HDU holds no data")
                image = np.array(hdul[0].data, dtype=np.float64)
                scale = _scale_from_header(hdul[0].header)
                variance, kind = None, None
                if "UNCERT" in hdul and hdul["UNCERT"].data is not None:
                    kind = str(hdul["UNCERT"].header.get("UTYPE", "VarianceUncertainty"))
                    plane = np.array(hdul["UNCERT"].data, dtype=np.float64)
                    variance = {"VarianceUncertainty": plane, "StdDevUncertainty": plane**2}.get(kind)
    except StampError:
        raise
    except Exception as exc:  # astropy raises several types for bytes that are not FITS
        raise StampError("bad_fits", f"{field}: {type(exc).__name__}: {exc}") from exc
    if image.ndim != 2:
        raise StampError("bad_shape", f"{field}: image has {image.ndim} dimensions")
    if variance is not None and variance.shape != image.shape:
        raise StampError("bad_shape", f"{field}: uncertainty {variance.shape} differs from image {image.shape}")
    return Cutout(image, variance, scale, kind)


def overlap_weights(n_in: int, scale_in: float, scale_out: float, n_out: int | None = None) -> np.ndarray:
    """(n_out, n_in) weights of the area-overlap resampling along one axis, both grids centred on the
    cutout's centre: row i holds the fraction of output pixel i covered by each input pixel (rows of
    output pixels beyond the input sum to less than 1, the rest of the pixel being 0)."""
    if n_out is None:
        n_out = max(1, int(round(n_in * scale_in / scale_out)))
    # edges in arcsec from the centre
    e_in = (np.arange(n_in + 1) - n_in / 2.0) * scale_in
    e_out = (np.arange(n_out + 1) - n_out / 2.0) * scale_out
    lo = np.maximum(e_out[:-1, None], e_in[None, :-1])
    hi = np.minimum(e_out[1:, None], e_in[None, 1:])
    return np.clip(hi - lo, 0.0, None) / scale_out


def fit_size(plane: np.ndarray, size: int) -> np.ndarray:
    """Centred zero-pad or centred crop of a 2-D plane to size x size (per axis)."""
    out = plane
    for axis in (0, 1):
        n = out.shape[axis]
        if n < size:
            before = (size - n) // 2
            pad = [(0, 0), (0, 0)]
            pad[axis] = (before, size - n - before)
            out = np.pad(out, pad, mode="constant", constant_values=0.0)
        elif n > size:
            start = (n - size) // 2
            out = out[start : start + size] if axis == 0 else out[:, start : start + size]
    return out


def _finite_or_skip(plane: np.ndarray, name: str) -> np.ndarray:
    finite = np.isfinite(plane)
    if not finite.any():
        raise StampError("all_nan", f"{name} holds no finite pixel")
    return np.where(finite, plane, 0.0)


def _normalise(plane: np.ndarray, name: str) -> np.ndarray:
    norm = np.linalg.norm(plane)
    if norm == 0:
        raise StampError("all_zero", f"{name} is all zero")
    return (plane / norm).astype(np.float32)


def prepare_plane(cutout: Cutout, settings: TripletSettings, name: str, *, uncertainty: bool = False) -> np.ndarray:
    """One channel of the model input from a decoded cutout (see the module docstring for the rule)."""
    if uncertainty:
        if cutout.variance is None:
            what = (
                "no UNCERT HDU"
                if cutout.uncertainty_kind is None
                else f"an UNCERT of UTYPE {cutout.uncertainty_kind!r}"
            )
            raise StampError("bad_uncertainty", f"{name} has {what} (VarianceUncertainty or StdDevUncertainty)")
        plane = np.where(cutout.variance >= 0, cutout.variance, np.nan)  # negative variance: not finite
    else:
        plane = cutout.image
    plane = _finite_or_skip(plane, name)
    if settings.pixel_scale is not None:
        wy = overlap_weights(plane.shape[0], cutout.scale, settings.pixel_scale)
        wx = overlap_weights(plane.shape[1], cutout.scale, settings.pixel_scale)
        plane = (wy**2) @ plane @ (wx**2).T if uncertainty else wy @ plane @ wx.T
    if uncertainty:
        plane = np.sqrt(plane)
    return _normalise(fit_size(plane, int(settings.size)), name)


def lsst_triplet(packet: Mapping[str, Any], settings: TripletSettings = TripletSettings()) -> np.ndarray:
    """The model's image input of one Rubin alert, float32 (3 or 4, size, size)."""
    cutouts = [decode_cutout(packet.get(f), f) for f in CUTOUT_FIELDS]
    planes = []
    for name, field, cutout in zip(CHANNELS, CUTOUT_FIELDS, cutouts):
        planes.append(prepare_plane(cutout, settings, f"{name} ({field})"))
    if settings.uncertainty_channel:
        planes.append(prepare_plane(cutouts[2], settings, "difference uncertainty", uncertainty=True))
    return np.stack(planes)
