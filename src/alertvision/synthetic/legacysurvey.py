"""Synthetic Legacy-Survey-like grz cutouts of a scene, in the viewer's raw format.

The cube is rendered as the viewer serves it: (3, 252, 252) float32 nanomaggies at 0.25"/px, FITS
row 0 to the south, exact zeros where there is no coverage; it then goes through the same
:func:`alertvision.data.legacysurvey.cube_to_image` as a downloaded cutout.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from alertvision.data.legacysurvey import BANDS, FETCH_PIXSCALE, FETCH_SIZE
from alertvision.synthetic import render
from alertvision.synthetic.scene import Scene, lsst_object_id

LS_ZP = 22.5  # nanomaggies
SEEING = {"g": 1.45, "r": 1.3, "z": 1.2}  # arcsec FWHM
DEPTH = {"g": 24.0, "r": 23.4, "z": 22.5}  # 5-sigma point-source depth


def _nmgy(mag: float) -> float:
    return 10 ** (-0.4 * (mag - LS_ZP))


def synthetic_ls_cube(scene: Scene, cfg: Mapping[str, Any]) -> np.ndarray | None:
    """The raw cube of ``scene`` or None where the (synthetic) footprint does not cover it.

    ``cfg`` is ``legacysurvey.synthetic``: ``coverage`` (probability a source is covered) and
    ``partial_rate`` (probability a covered source sits at a footprint edge, part of it zero).
    """
    rng = scene.rng(1)
    if rng.random() >= cfg["coverage"]:
        return None
    shape = (FETCH_SIZE, FETCH_SIZE)
    c = (FETCH_SIZE - 1) / 2.0
    px = 1.0 / FETCH_PIXSCALE  # pixels per arcsec
    cube = np.zeros((len(BANDS), *shape), dtype=np.float64)
    for b, band in enumerate(BANDS):
        fwhm = SEEING[band] * px
        img = np.zeros(shape)
        h = scene.host
        if h is not None:
            # display orientation: +x west -> right, +y north -> up (row index decreases)
            gal = render.sersic_profile(
                shape, c + h.dx * px, c - h.dy * px, h.r_e * px, h.n, h.q, -h.pa, _nmgy(h.mag(band)), oversample=1
            )
            img += render.convolve_psf(gal, fwhm)
        points = [(s.dx, s.dy, s.mag(band)) for s in scene.stars]
        if scene.kind == "star_var":
            points.append((0.0, 0.0, scene.var_mean_mag + {"g": 0.4, "r": 0.0, "z": -0.3}[band]))
        elif scene.kind == "agn":
            points.append((0.0, 0.0, scene.var_mean_mag + {"g": 0.2, "r": 0.0, "z": -0.2}[band]))
        elif scene.kind == "dipole":
            points.append((0.0, 0.0, scene.extra["star_mag"] + {"g": 0.5, "r": 0.0, "z": -0.4}[band]))
        for dx, dy, mag in points:
            x, y = c + dx * px, c - dy * px
            if -20 < x < FETCH_SIZE + 20 and -20 < y < FETCH_SIZE + 20:
                img += render.point_source(shape, x, y, _nmgy(mag), fwhm)
        nea = 4 * np.pi * (fwhm * render.FWHM_TO_SIGMA) ** 2
        sigma = _nmgy(DEPTH[band]) / 5.0 / np.sqrt(nea)
        cube[b] = img + rng.normal(0.0, sigma, shape)
    if rng.random() < cfg["partial_rate"]:
        edge = int(rng.uniform(0.05, 0.6) * FETCH_SIZE)
        side = int(rng.integers(0, 4))
        region = [np.s_[:, :edge, :], np.s_[:, -edge:, :], np.s_[:, :, :edge], np.s_[:, :, -edge:]][side]
        cube[region] = 0.0
    return np.ascontiguousarray(cube[:, ::-1, :], dtype=np.float32)  # FITS row order: south first


def synthetic_provider(scenes: list[Scene], cfg: Mapping[str, Any]):
    """A cube provider (see :data:`alertvision.data.legacysurvey.CubeProvider`) over synthetic scenes, by a
    source's ZTF name or its Rubin diaObjectId (the synthetic LSST sky's, as text)."""
    by_id = {s.object_id: s for s in scenes} | {str(lsst_object_id(s.index)): s for s in scenes}

    def provide(object_id: str, ra: float, dec: float) -> np.ndarray | None:
        scene = by_id.get(object_id)
        if scene is None:
            raise KeyError(
                f"{object_id} is not a source of the synthetic dataset: "
                "legacysurvey.source 'synthetic' needs data.source 'synthetic' with the same settings"
            )
        return synthetic_ls_cube(scene, cfg)

    return provide
