"""Image rendering for the synthetic sky: PSF-convolved galaxies, point sources, noise, artefacts.

Coordinates are pixels with (0, 0) at the centre of the first pixel; x runs along columns, y along
rows. Fluxes are in the image's own counts.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.special import erf

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def _pixel_integrated_gauss(n: int, centre: float, sigma: float) -> np.ndarray:
    edges = np.arange(n + 1) - 0.5
    cdf = 0.5 * (1.0 + erf((edges - centre) / (np.sqrt(2.0) * sigma)))
    return np.diff(cdf)


def point_source(shape: tuple[int, int], x: float, y: float, flux: float, fwhm: float) -> np.ndarray:
    """A pixel-integrated Gaussian PSF of total ``flux`` at (x, y)."""
    sigma = fwhm * FWHM_TO_SIGMA
    gy = _pixel_integrated_gauss(shape[0], y, sigma)
    gx = _pixel_integrated_gauss(shape[1], x, sigma)
    return flux * np.outer(gy, gx)


def sersic_b(n: float) -> float:
    """The b_n constant of a Sersic profile (Ciotti & Bertin 1999 expansion)."""
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n * n)


def sersic_profile(
    shape: tuple[int, int],
    x: float,
    y: float,
    r_e: float,
    n: float,
    q: float,
    pa: float,
    flux: float,
    oversample: int = 3,
) -> np.ndarray:
    """An intrinsic (unconvolved) elliptical Sersic galaxy of total ``flux`` (within the stamp)."""
    img = sersic_surface(shape, x, y, r_e, n, q, pa, oversample)
    total = img.sum()
    return img * (flux / total) if total > 0 else img


def sersic_surface(
    shape: tuple[int, int], x: float, y: float, r_e: float, n: float, q: float, pa: float, oversample: int = 3
) -> np.ndarray:
    """An elliptical Sersic profile in units of its surface brightness at ``r_e`` (q and r_e at least 0.05),
    averaged over ``oversample`` x ``oversample`` points per pixel."""
    h, w = shape
    off = (np.arange(oversample) + 0.5) / oversample - 0.5
    yy = (np.arange(h)[:, None] + off[None, :]).ravel()
    xx = (np.arange(w)[:, None] + off[None, :]).ravel()
    dy = yy[:, None] - y
    dx = xx[None, :] - x
    c, s = np.cos(pa), np.sin(pa)
    u = dx * c + dy * s
    v = -dx * s + dy * c
    r = np.sqrt(u * u + (v / max(q, 0.05)) ** 2)
    img = np.exp(-sersic_b(n) * ((r / max(r_e, 0.05)) ** (1.0 / n) - 1.0))
    return img.reshape(h, oversample, w, oversample).mean(axis=(1, 3))


def convolve_psf(image: np.ndarray, fwhm: float) -> np.ndarray:
    """Convolve with a circular Gaussian PSF of the given FWHM (pixels)."""
    return gaussian_filter(image, fwhm * FWHM_TO_SIGMA, mode="constant")


def dipole(
    shape: tuple[int, int], x: float, y: float, flux: float, fwhm: float, shift: tuple[float, float]
) -> np.ndarray:
    """The residual of a point source subtracted with a misregistered reference."""
    return point_source(shape, x + shift[0], y + shift[1], flux, fwhm) - point_source(shape, x, y, flux, fwhm)


def cosmic_ray(shape: tuple[int, int], x: float, y: float, flux: float, rng: np.random.Generator) -> np.ndarray:
    """A sharp hit narrower than any PSF: one to three adjacent hot pixels, or a short track."""
    img = np.zeros(shape)
    n = int(rng.integers(1, 4))
    angle = rng.uniform(0, np.pi)
    for k in range(n):
        px = int(round(x + k * np.cos(angle)))
        py = int(round(y + k * np.sin(angle)))
        if 0 <= px < shape[1] and 0 <= py < shape[0]:
            img[py, px] += flux / n
    return img


def nan_patch(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mask a rectangle with NaN, as saturated cores and bad columns show up in real stamps."""
    out = image.copy()
    h, w = image.shape
    if rng.random() < 0.5:  # a bad column segment
        col = int(rng.integers(0, w))
        y0 = int(rng.integers(0, h - 8))
        out[y0 : y0 + int(rng.integers(8, h - y0 + 1)), col] = np.nan
    else:
        ph, pw = int(rng.integers(2, 8)), int(rng.integers(2, 8))
        y0, x0 = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
        out[y0 : y0 + ph, x0 : x0 + pw] = np.nan
    return out
