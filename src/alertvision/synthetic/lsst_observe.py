"""Observe a synthetic scene with a Rubin-like survey: visits, images in nJy, measured diaSources.

The scene (:mod:`alertvision.synthetic.scene`) is the same one the ZTF simulation observes, over the
same observing window, so one source can be seen by both surveys. What is Rubin's here:

- **visits**: nights a mean ``cadence_days`` apart, two 30 s visits a night (the second in the same
  band half of the time), bands ugrizy in the proportions of Rubin's wide survey; the field's
  rotation on the sky (``ROTPA``) is drawn per visit and the cutouts keep the detector's axes.
- **photometry from the sky**: per band, the zero point (AB mag giving 1 e-/s), the dark-sky
  brightness and the median seeing are Rubin's nominal ones; each visit draws its seeing (a
  log-normal about the median) and its sky (the dark sky up to a moon-bright one). Noise follows:
  sky and read noise, plus the sources' own photon noise; pixels over the full well saturate. The
  5-sigma depth is not drawn, it follows (about 24 mag in r).
- **template**: a deeper coadd (the noise of 10 to 40 visits) at a better-than-median seeing, warped
  to the visit's axes.
- **difference**: science minus the template matched to the visit's PSF; the match has a small
  error (a PSF-width error of 2%; for the ``bad_sub`` kind the ZTF simulation's 18%), and the
  template's static point source is misregistered by 0.01" (0.05" for the ``dipole`` kind, whose
  bright star's core then leaves a dipole).
- **measurement**: a stand-in for Rubin's pipeline, run on the rendered pixels: PSF photometry at
  the measured centroid on the difference (``psfFlux``, ``psfFluxErr``, ``snr``, ``psfChi2``,
  ``psfNdata``), forced photometry on the science and template images, a moment-based
  ``extendedness``, ``isDipole`` from two significant lobes, pixel flags from the masks
  (saturated, cosmic ray, edge, bad columns), and ``reliability`` as a fixed logistic function of
  the fit quality, the S/N and the flags (a stand-in for Rubin's real/bogus classifier, which is not
  simulated). A diaSource is issued where ``snr >= 5`` (positive or negative).

Fluxes are nJy (AB zero point 31.4). All draws come from the scene's own generator stream 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.special import gamma

from alertvision.synthetic import render
from alertvision.synthetic.scene import ZTF_ZP, Galaxy, Scene, Star

PIXEL_SCALE = 0.2  # arcsec per pixel
AB_NJY = 31.4  # AB magnitude of 1 nJy
EXPOSURE_S = 30.0
READ_NOISE_E = 9.0
FULL_WELL_E = 100_000.0
PSF_SIZE = 41  # the PSF image's side in the real packets
BANDS = ("u", "g", "r", "i", "z", "y")
#: share of the wide survey's visits per band
VISIT_SHARE = (0.07, 0.09, 0.22, 0.22, 0.20, 0.20)
#: per band: zero point (AB mag for 1 e-/s), dark sky (AB mag/arcsec^2), median seeing FWHM (arcsec),
#: and how much brighter the sky gets with the moon up (mag)
BAND_MODEL: dict[str, tuple[float, float, float, float]] = {
    "u": (26.52, 23.05, 0.92, 1.5),
    "g": (28.51, 22.25, 0.87, 1.5),
    "r": (28.36, 21.20, 0.83, 1.0),
    "i": (28.17, 20.46, 0.80, 0.5),
    "z": (27.78, 19.61, 0.78, 0.5),
    "y": (26.82, 18.60, 0.76, 0.5),
}
DETECT_SNR = 5.0
#: a moving object brighter than this is a known solar-system object: Rubin associates it with its
#: ssObject and it gets no diaObject
KNOWN_ASTEROID_MAG = 21.5
COUNTS_TO_NJY = 10 ** (0.4 * (AB_NJY - ZTF_ZP))  # ZTF counts (zero point 26.3) -> nJy


# --- colours ------------------------------------------------------------------------------------


def static_mag(obj: Galaxy | Star, band: str) -> float:
    """An object's magnitude in a Rubin band: g, r, i, z as the scene gives them, u and y extrapolated."""
    if band == "u":
        return obj.mag("g") + 0.4 + 1.6 * obj.g_r
    if band == "y":
        return obj.mag("z") - 0.3 * obj.r_z
    return obj.mag(band)


_VAR_COLOUR = {"u": 0.9, "g": 0.3, "r": 0.0, "i": -0.15, "z": -0.25, "y": -0.3}
_STAR_COLOUR = {"u": 1.4, "g": 0.5, "r": 0.0, "i": -0.2, "z": -0.3, "y": -0.35}


def _sn_colour(scene: Scene, band: str, dt: float) -> float:
    """A supernova's band minus r, reddening after peak (g as in the ZTF simulation)."""
    t = min(max(dt, 0.0), 60.0)
    return {
        "u": 0.3 + 2.0 * scene.colour_g_r + 0.04 * t,
        "g": scene.colour_g_r + 0.015 * t,
        "r": 0.0,
        "i": 0.05 - 0.005 * t,
        "z": 0.10 - 0.008 * t,
        "y": 0.15 - 0.01 * t,
    }[band]


def new_flux(scene: Scene, jd: float, band: str) -> float:
    """The variable part's flux (nJy) at the source in ``band``: the scene's r-band light curve and a colour."""
    r = scene.transient_flux(jd, "r") * COUNTS_TO_NJY
    if scene.kind == "sn":
        return r * 10 ** (-0.4 * _sn_colour(scene, band, jd - scene.t_peak))
    if scene.kind in ("star_var", "agn"):
        return r * 10 ** (-0.4 * _VAR_COLOUR[band])
    return 0.0


def static_point_flux(scene: Scene, band: str) -> float:
    """The flux (nJy) of the point source the template holds at the source position."""
    if scene.kind in ("star_var", "agn"):
        return 10 ** (-0.4 * (scene.var_mean_mag + _VAR_COLOUR[band] - AB_NJY))
    if scene.kind == "dipole":
        return 10 ** (-0.4 * (scene.extra["star_mag"] + _STAR_COLOUR[band] - AB_NJY))
    return 0.0


# --- the camera ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Visit:
    """One exposure of the source's field."""

    jd: float
    band: str
    number: int  # the visit's running number that night
    fwhm: float  # arcsec
    sky_mag: float  # AB mag/arcsec^2
    rotation: float  # radians, the sky's rotation in the detector frame (ROTPA)
    detector: int
    x: float
    y: float


def njy_per_electron(band: str) -> float:
    """nJy of one photo-electron in a 30 s visit in ``band``."""
    zp = BAND_MODEL[band][0] + 2.5 * math.log10(EXPOSURE_S)
    return 10 ** (-0.4 * (zp - AB_NJY))


def sky_electrons(band: str, sky_mag: float) -> float:
    """Sky photo-electrons per pixel in a 30 s visit."""
    zp = BAND_MODEL[band][0] + 2.5 * math.log10(EXPOSURE_S)
    return 10 ** (-0.4 * (sky_mag - 2.5 * math.log10(PIXEL_SCALE**2) - zp))


def depth(band: str, fwhm: float, sky_mag: float) -> float:
    """The 5-sigma point-source depth (AB mag) of a visit, from the sky and read noise alone."""
    k = njy_per_electron(band)
    sigma_pix = k * math.sqrt(sky_electrons(band, sky_mag) + READ_NOISE_E**2)
    nea = 4 * math.pi * (fwhm / PIXEL_SCALE * render.FWHM_TO_SIGMA) ** 2
    return AB_NJY - 2.5 * math.log10(5 * sigma_pix * math.sqrt(nea))


def visits(scene: Scene, rng: np.random.Generator, cadence_days: float) -> list[Visit]:
    """The visits of the source's field over the scene's observing window (the ZTF simulation's window)."""
    out: list[Visit] = []
    t = scene.season_start
    end = scene.season_start + scene.season_length
    share = np.asarray(VISIT_SHARE) / sum(VISIT_SHARE)
    while t < end:
        night = math.floor(t) + 0.5
        first = str(rng.choice(BANDS, p=share))
        second = first if rng.random() < 0.5 else str(rng.choice(BANDS, p=share))
        start = night + 0.2 + float(rng.uniform(0.0, 0.2))
        rotation = float(rng.uniform(0.0, 2 * np.pi))
        for k, band in enumerate((first, second)):
            zp, dark, seeing, moon = BAND_MODEL[band]
            fwhm = float(np.clip(seeing * np.exp(rng.normal(0.0, 0.2)), 0.45, 2.0))
            out.append(
                Visit(
                    jd=start + k * 0.023,
                    band=band,
                    number=int(rng.integers(1, 1000)),
                    fwhm=fwhm,
                    sky_mag=dark - float(rng.uniform(0.0, moon)),
                    rotation=rotation + float(rng.normal(0.0, 0.01)),
                    detector=int(rng.integers(0, 189)),
                    x=float(rng.uniform(0.0, 4072.0)),
                    y=float(rng.uniform(0.0, 4000.0)),
                )
            )
        t += max(1.0, float(rng.exponential(cadence_days)))
    return out


# --- rendering ------------------------------------------------------------------------------------


def sersic_image(
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
    """An unconvolved elliptical Sersic galaxy (pixels), normalised to its analytic total ``flux``, so a
    stamp smaller than the galaxy holds only its share of the light."""
    img = render.sersic_surface(shape, x, y, r_e, n, q, pa, oversample)
    q, r_e, b = max(q, 0.05), max(r_e, 0.05), render.sersic_b(n)
    total = 2 * math.pi * n * q * r_e**2 * math.exp(b) * b ** (-2 * n) * gamma(2 * n)
    return img * (flux / total)


class Frame:
    """The static sky of a scene on one visit's cutout: detector axes, ``size`` pixels at 0.2"/px."""

    def __init__(self, scene: Scene, band: str, size: int, rotation: float, centre: tuple[float, float]):
        self.scene, self.band, self.size, self.rotation = scene, band, size, rotation
        self.cx, self.cy = centre
        self.pad = 16
        self._host: np.ndarray | None = None

    def to_pixels(self, dx: float, dy: float) -> tuple[float, float]:
        """Sky offsets (arcsec, +x west, +y north) -> cutout pixels (x, y), rotated by the visit's angle."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        return self.cx + (dx * c - dy * s) / PIXEL_SCALE, self.cy + (dx * s + dy * c) / PIXEL_SCALE

    def host(self) -> np.ndarray:
        """The host galaxy before the PSF, on the cutout plus a margin (zeros without a host)."""
        if self._host is None:
            n = self.size + 2 * self.pad
            h = self.scene.host
            if h is None:
                self._host = np.zeros((n, n))
            else:
                x, y = self.to_pixels(h.dx, h.dy)
                flux = 10 ** (-0.4 * (static_mag(h, self.band) - AB_NJY))
                self._host = sersic_image(
                    (n, n), x + self.pad, y + self.pad, h.r_e / PIXEL_SCALE, h.n, h.q, h.pa + self.rotation, flux
                )
        return self._host

    def image(self, fwhm: float, point_flux: float = 0.0, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """The static sky seen with a Gaussian PSF of ``fwhm`` arcsec; ``point_flux`` nJy at the source
        position (moved by ``shift`` pixels)."""
        sigma = fwhm / PIXEL_SCALE * render.FWHM_TO_SIGMA
        p = self.pad
        img = gaussian_filter(self.host(), sigma, mode="constant", truncate=4.0)[p:-p, p:-p].copy()
        shape = (self.size, self.size)
        for s in self.scene.stars:
            x, y = self.to_pixels(s.dx, s.dy)
            if -20 < x < self.size + 20 and -20 < y < self.size + 20:
                img += render.point_source(
                    shape, x, y, 10 ** (-0.4 * (static_mag(s, self.band) - AB_NJY)), fwhm / PIXEL_SCALE
                )
        if point_flux:
            img += render.point_source(shape, self.cx + shift[0], self.cy + shift[1], point_flux, fwhm / PIXEL_SCALE)
        return img


def psf_image(fwhm: float, size: int = PSF_SIZE) -> np.ndarray:
    """The PSF model image (unit sum) for the cutouts' PSF HDU."""
    c = (size - 1) / 2.0
    return render.point_source((size, size), c, c, 1.0, fwhm / PIXEL_SCALE)


# --- one visit ----------------------------------------------------------------------------------------


@dataclass
class Images:
    """One visit's cutouts (nJy) and their variance planes (nJy^2); NaN marks masked pixels."""

    science: np.ndarray
    science_var: np.ndarray
    template: np.ndarray
    template_var: np.ndarray
    difference: np.ndarray
    difference_var: np.ndarray
    fwhm: float
    template_fwhm: float


@dataclass
class Template:
    """The deep template of a source in one band: its seeing and its depth (number of visits coadded)."""

    fwhm: float
    n_visits: int


def _signal(scene: Scene, visit: Visit, special: int, i: int, rng: np.random.Generator) -> dict[str, Any]:
    """What is new at the source on this visit: its flux (nJy) and how it looks."""
    kind = scene.kind
    if kind in ("sn", "star_var", "agn"):
        return {"flux": new_flux(scene, visit.jd, visit.band), "shape": "psf"}
    if kind == "asteroid" and i == special:
        mag = float(rng.uniform(17.0, 24.0))
        return {"flux": 10 ** (-0.4 * (mag - AB_NJY)), "shape": "psf", "mag": mag}
    if kind == "cosmic" and i == special:  # deposited charge does not depend on the band's zero point
        electrons = float(np.exp(rng.uniform(np.log(500.0), np.log(50_000.0))))
        return {"flux": electrons * njy_per_electron(visit.band), "shape": "cosmic"}
    return {"flux": 0.0, "shape": "none"}


def render_visit(
    scene: Scene,
    visit: Visit,
    template: Template,
    size: int,
    signal: dict[str, Any],
    rng: np.random.Generator,
    nan_patch_rate: float,
    edge_rate: float,
) -> tuple[Images, dict[str, Any]]:
    """The visit's science, template and difference cutouts, and what their masks say (``masks``)."""
    centre = (size // 2 + float(rng.uniform(-0.5, 0.5)), size // 2 + float(rng.uniform(-0.5, 0.5)))
    frame = Frame(scene, visit.band, size, visit.rotation, centre)
    k = njy_per_electron(visit.band)
    shape = (size, size)
    point = static_point_flux(scene, visit.band)
    # the visit: static sky at its seeing, plus what is new
    static_sci = frame.image(visit.fwhm, point)
    new = np.zeros(shape)
    fwhm_px = visit.fwhm / PIXEL_SCALE
    if signal["shape"] == "psf":
        new = render.point_source(shape, centre[0], centre[1], signal["flux"], fwhm_px)
    elif signal["shape"] == "cosmic":
        new = render.cosmic_ray(shape, centre[0], centre[1], signal["flux"], rng)
    truth = static_sci + new
    sky_e = sky_electrons(visit.band, visit.sky_mag)
    sci_var = k * k * (sky_e + READ_NOISE_E**2) + k * np.clip(truth, 0.0, None)
    science = truth + rng.normal(0.0, 1.0, shape) * np.sqrt(sci_var)
    saturated = truth / k + sky_e > FULL_WELL_E
    # the template: a deep coadd at its own seeing, warped to the visit's axes
    dark = BAND_MODEL[visit.band][1]
    tmpl_truth = frame.image(template.fwhm, point)
    tmpl_var = (k * k * (sky_electrons(visit.band, dark) + READ_NOISE_E**2) + k * np.clip(tmpl_truth, 0, None)) / (
        template.n_visits
    )
    tmpl = tmpl_truth + rng.normal(0.0, 1.0, shape) * np.sqrt(tmpl_var)
    # the difference: the template matched to the visit's PSF, with a PSF-width error and a misregistration
    width_error = float(rng.normal(0.0, 0.18 if scene.kind == "bad_sub" else 0.02))
    shift = tuple(rng.normal(0.0, 0.05 if scene.kind == "dipole" else 0.01, size=2) / PIXEL_SCALE)
    matched = frame.image(visit.fwhm * (1.0 + width_error), point, shift)
    diff_var = sci_var + tmpl_var
    difference = truth - matched + rng.normal(0.0, 1.0, shape) * np.sqrt(tmpl_var) + (science - truth)
    masks = {"saturated": saturated.copy(), "bad": np.zeros(shape, bool), "edge": np.zeros(shape, bool)}
    if rng.random() < nan_patch_rate:
        masks["bad"] = np.isnan(render.nan_patch(np.zeros(shape), rng))
    if rng.random() < edge_rate:  # the source sits near a detector edge: part of the cutout has no data
        cut = int(rng.integers(3, size // 3))
        side = int(rng.integers(0, 4))
        edge = masks["edge"]
        (edge[:, :cut], edge[:, -cut:], edge[:cut], edge[-cut:])[side][...] = True
    masked = masks["saturated"] | masks["bad"] | masks["edge"]
    science[masked] = np.nan
    difference[masked] = np.nan
    template_masked = masks["edge"]
    tmpl[template_masked] = np.nan
    images = Images(science, sci_var, tmpl, tmpl_var, difference, diff_var, visit.fwhm, template.fwhm)
    return images, {"masks": masks, "centre": centre, "truth_new": new}


# --- measurement (a stand-in for Rubin's pipeline) ----------------------------------------------------


def _box(size: int, x: float, y: float, half: int) -> tuple[slice, slice]:
    cx, cy = int(round(x)), int(round(y))
    return slice(max(0, cy - half), min(size, cy + half + 1)), slice(max(0, cx - half), min(size, cx + half + 1))


def psf_photometry(
    image: np.ndarray, var: np.ndarray, x: float, y: float, fwhm: float
) -> tuple[float, float, float, int]:
    """(flux, error, chi2, n pixels) of a PSF fit at (x, y) over a box of +-1.5 FWHM; masked pixels left out."""
    size = image.shape[0]
    fwhm_px = fwhm / PIXEL_SCALE
    model = render.point_source(image.shape, x, y, 1.0, fwhm_px)
    box = _box(size, x, y, int(math.ceil(1.5 * fwhm_px)))
    d, v, p = image[box], var[box], model[box]
    ok = np.isfinite(d) & (v > 0)
    if not ok.any() or not (p[ok] ** 2 / v[ok]).sum() > 0:
        return math.nan, math.nan, math.nan, 0
    d, v, p = d[ok], v[ok], p[ok]
    norm = float((p * p / v).sum())
    flux = float((p * d / v).sum()) / norm
    chi2 = float(((d - flux * p) ** 2 / v).sum())
    return flux, 1.0 / math.sqrt(norm), chi2, int(ok.sum())


def extendedness(image: np.ndarray, x: float, y: float, fwhm: float, sign: float) -> float | None:
    """Moment size of the source over the PSF's, mapped to 0 (point-like) .. 1 (extended); None where the
    weighted flux is not positive. Gaussian-weighted second moments with the PSF's own width: a point
    source gives the PSF's size, an extended one more, a cosmic ray less."""
    sigma = fwhm / PIXEL_SCALE * render.FWHM_TO_SIGMA
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    r2 = (xx - x) ** 2 + (yy - y) ** 2
    w = np.exp(-r2 / (2 * sigma * sigma))
    d = np.where(np.isfinite(image), sign * image, 0.0)
    total = float((w * d).sum())
    if not total > 0:
        return None
    ratio = float((w * d * r2).sum()) / total / (sigma * sigma)  # 1 for a point source
    return float(np.clip((ratio - 1.0) / 0.3, 0.0, 1.0))


def is_dipole(difference: np.ndarray, var: np.ndarray, x: float, y: float, fwhm: float) -> bool:
    """Two lobes: a positive and a negative pixel beyond 5 sigma within 2 FWHM, the weaker at least 30% of the
    stronger."""
    box = _box(difference.shape[0], x, y, int(math.ceil(2 * fwhm / PIXEL_SCALE)))
    z = difference[box] / np.sqrt(var[box])
    z = z[np.isfinite(z)]
    if z.size == 0:
        return False
    hi, lo = float(z.max()), float(-z.min())
    return hi > 5 and lo > 5 and min(hi, lo) >= 0.3 * max(hi, lo)


def cosmic_flags(science: np.ndarray, var: np.ndarray, x: float, y: float) -> tuple[bool, bool]:
    """(a cosmic ray anywhere, one at the centre): a pixel 5 sigma above the mean of its 4 neighbours and
    standing out by more than half its value, sharper than any PSF allows (masked pixels are not neighbours)."""
    padded = np.pad(science, 1, mode="constant", constant_values=np.nan)
    around = np.stack([padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]])
    finite = np.isfinite(around)
    neighbours = np.where(finite, around, 0.0).sum(axis=0) / np.maximum(finite.sum(axis=0), 1)
    excess = np.where(np.isfinite(science) & finite.any(axis=0), science - neighbours, 0.0)
    img = np.where(np.isfinite(science), science, 0.0)
    hits = (excess > 5 * np.sqrt(var)) & (excess > 0.5 * img)
    centre = hits[_box(img.shape[0], x, y, 1)]
    return bool(hits.any()), bool(centre.any())


def reliability(
    snr: float, chi2_per_pixel: float, dipole: bool, cr_centre: bool, saturated_centre: bool, noise: float
) -> float:
    """The stand-in real/bogus score: a fixed logistic function of the S/N, the PSF fit's chi2 per pixel and the
    flags, plus the classifier's scatter ``noise`` (a standard normal draw)."""
    z = 1.0 + 2.0 * math.log10(max(snr, 1.0) / DETECT_SNR) - 4.0 * math.log10(max(chi2_per_pixel, 1.0))
    z -= 2.5 * dipole + 2.5 * cr_centre + 1.5 * saturated_centre
    return 1.0 / (1.0 + math.exp(-(z + 0.8 * noise)))


def measure(images: Images, visit: Visit, info: dict[str, Any], rng: np.random.Generator) -> dict[str, Any] | None:
    """The diaSource fields the pipeline stand-in measures, or None where |S/N| < 5 (no diaSource)."""
    size = images.difference.shape[0]
    cx, cy = info["centre"]
    # centroid: the truth, off by the measurement's scatter (about the PSF's sigma over the S/N)
    flux0, err0, _, _ = psf_photometry(images.difference, images.difference_var, cx, cy, visit.fwhm)
    if not (math.isfinite(flux0) and abs(flux0) / err0 >= DETECT_SNR):
        return None
    sigma_px = visit.fwhm / PIXEL_SCALE * render.FWHM_TO_SIGMA
    scatter = sigma_px / max(abs(flux0) / err0, 1.0)
    x, y = cx + float(rng.normal(0.0, scatter)), cy + float(rng.normal(0.0, scatter))
    flux, err, chi2, ndata = psf_photometry(images.difference, images.difference_var, x, y, visit.fwhm)
    snr = abs(flux) / err
    if not snr >= DETECT_SNR:
        return None
    sci_flux, sci_err, _, _ = psf_photometry(images.science, images.science_var, x, y, visit.fwhm)
    tmpl_flux, tmpl_err, _, _ = psf_photometry(images.template, images.template_var, x, y, images.template_fwhm)
    masks = info["masks"]
    centre_box = _box(size, x, y, 1)
    cr_any, cr_centre = cosmic_flags(images.science, images.science_var, x, y)
    dipole = is_dipole(images.difference, images.difference_var, x, y, visit.fwhm)
    sat_centre = bool(masks["saturated"][centre_box].any())
    edge = bool(masks["edge"].any())
    masked = masks["saturated"] | masks["bad"]
    return {
        "x_cutout": x,
        "y_cutout": y,
        "psfFlux": flux,
        "psfFluxErr": err,
        "snr": snr,
        "psfChi2": chi2,
        "psfNdata": ndata,
        "scienceFlux": sci_flux,
        "scienceFluxErr": sci_err,
        "templateFlux": tmpl_flux,
        "templateFluxErr": tmpl_err,
        "isNegative": flux < 0,
        "extendedness": extendedness(images.difference, x, y, visit.fwhm, 1.0 if flux > 0 else -1.0),
        "isDipole": dipole,
        "reliability": reliability(snr, chi2 / max(ndata, 1), dipole, cr_centre, sat_centre, float(rng.normal())),
        "pixelFlags": edge,
        "pixelFlags_bad": bool(masks["bad"].any()),
        "pixelFlags_cr": cr_any,
        "pixelFlags_crCenter": cr_centre,
        "pixelFlags_edge": edge,
        "pixelFlags_interpolated": bool(masked.any()),
        "pixelFlags_interpolatedCenter": bool(masked[centre_box].any()),
        "pixelFlags_saturated": bool(masks["saturated"].any()),
        "pixelFlags_saturatedCenter": sat_centre,
        "bboxSize": int(2 * math.ceil(1.5 * visit.fwhm / PIXEL_SCALE) + 1),
    }


@dataclass
class Detection:
    """A diaSource of the scene: its visit, measured fields, cutouts, and the simulation truth: what made it and
    where the source sits in the cutout (pixels)."""

    visit: Visit
    fields: dict[str, Any]
    images: Images
    signal: dict[str, Any]
    centre: tuple[float, float]


def observe_lsst(
    scene: Scene, cadence_days: float, size: int, nan_patch_rate: float = 0.04, edge_rate: float = 0.02
) -> tuple[list[Visit], list[Detection]]:
    """Every visit of the scene's field over its window, and the diaSources (|S/N| >= 5) among them."""
    rng = scene.rng(3)
    seen = visits(scene, rng, cadence_days)
    special = int(rng.integers(0, len(seen))) if seen else -1
    templates: dict[str, Template] = {}
    out: list[Detection] = []
    for i, visit in enumerate(seen):
        if visit.band not in templates:
            seeing = BAND_MODEL[visit.band][2]
            templates[visit.band] = Template(seeing * float(rng.uniform(0.8, 1.0)), int(rng.integers(10, 41)))
        signal = _signal(scene, visit, special, i, rng)
        images, info = render_visit(scene, visit, templates[visit.band], size, signal, rng, nan_patch_rate, edge_rate)
        fields = measure(images, visit, info, rng)
        if fields is not None:
            out.append(Detection(visit, fields, images, signal, info["centre"]))
    return seen, out
