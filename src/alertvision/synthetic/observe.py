"""Observe a synthetic scene with a ZTF-like survey: epochs, detections, alert fields and stamps."""

from __future__ import annotations

from typing import Any

import numpy as np

from alertvision.synthetic import render
from alertvision.synthetic.scene import BAND_OF_FID, PS1_DEPTH, ZTF_REF_DEPTH, ZTF_ZP, Scene

STAMP = (63, 63)
CENTRE = 31.0
NOMINAL_LIMIT = 20.35
REAL_KINDS = ("sn", "star_var", "agn", "asteroid")


def _psf_noise(limit_mag: float, fwhm: float) -> tuple[float, float]:
    """(flux error of PSF photometry, per-pixel noise) for a 5-sigma limit and seeing."""
    sigma_flux = 10 ** (-0.4 * (limit_mag - ZTF_ZP)) / 5.0
    nea = 4.0 * np.pi * (fwhm * render.FWHM_TO_SIGMA) ** 2
    return sigma_flux, sigma_flux / np.sqrt(nea)


def _epochs(scene: Scene, rng: np.random.Generator, cadence_days: float) -> list[tuple[float, int]]:
    """Exposures (jd, fid) of the source's field over its season."""
    out = []
    t = scene.season_start
    end = scene.season_start + scene.season_length
    while t < end:
        night = np.floor(t) + 0.5
        bands = [fid for fid, p in ((1, 0.7), (2, 0.85), (3, 0.04)) if rng.random() < p] or [2]
        for k, fid in enumerate(bands):
            out.append((float(night + 0.15 + 0.08 * k + rng.uniform(0, 0.05)), fid))
        t += max(1.0, rng.exponential(cadence_days))
    return out


class _Static:
    """The static sky of a scene rendered on the 63x63 stamp, cached per band and PSF."""

    def __init__(self, scene: Scene):
        self.scene = scene
        self._hosts: dict[str, np.ndarray] = {}

    def host(self, band: str) -> np.ndarray:
        """The host galaxy before convolution (zeros for a host-less source)."""
        if band not in self._hosts:
            h = self.scene.host
            if h is None:
                self._hosts[band] = np.zeros(STAMP)
            else:
                flux = 10 ** (-0.4 * (h.mag(band) - ZTF_ZP))
                self._hosts[band] = render.sersic_profile(
                    STAMP, CENTRE + h.dx, CENTRE + h.dy, h.r_e, h.n, h.q, h.pa, flux
                )
        return self._hosts[band]

    def image(self, band: str, fwhm: float, point_flux: float) -> np.ndarray:
        img = render.convolve_psf(self.host(band), fwhm)
        for s in self.scene.stars:
            x, y = CENTRE + s.dx, CENTRE + s.dy
            if -5 < x < STAMP[1] + 5 and -5 < y < STAMP[0] + 5:
                img += render.point_source(STAMP, x, y, 10 ** (-0.4 * (s.mag(band) - ZTF_ZP)), fwhm)
        if point_flux:
            img += render.point_source(STAMP, CENTRE, CENTRE, point_flux, fwhm)
        return img


def _neighbours(scene: Scene, rng: np.random.Generator) -> dict[str, float]:
    """PS1 neighbours (sgscore, distpsnr, nmtchps) and the nearest ZTF reference source (distnr, magnr,
    DAOPHOT chi and sharpness: extended for a galaxy, point-like for a star), -999 where there is none."""
    cat = scene.catalogue()
    ps1 = [o for o in cat if o[1] < PS1_DEPTH and o[0] < 30.0]
    ref = [o for o in cat if o[1] < ZTF_REF_DEPTH and o[0] < 30.0]
    out: dict[str, float] = {"nmtchps": float(len(ps1) + scene.ps1_background)}
    for k in (1, 2):
        if len(ps1) >= k:
            out[f"sgscore{k}"], out[f"distpsnr{k}"] = ps1[k - 1][2], ps1[k - 1][0]
        else:
            out[f"sgscore{k}"], out[f"distpsnr{k}"] = -999.0, -999.0
    if not ref:
        out.update(distnr=-999.0, magnr=-999.0, chinr=-999.0, sharpnr=-999.0)
    elif ref[0][3]:  # a galaxy
        out.update(
            distnr=ref[0][0], magnr=ref[0][1], chinr=float(rng.uniform(2.0, 8.0)), sharpnr=float(rng.uniform(0.25, 0.9))
        )
    else:
        out.update(
            distnr=ref[0][0], magnr=ref[0][1], chinr=float(rng.uniform(0.5, 1.6)), sharpnr=float(rng.normal(0.0, 0.08))
        )
    return out


def _signal(
    scene: Scene, jd: float, band: str, fwhm: float, i: int, special: int, rng: np.random.Generator
) -> tuple[float, dict[str, Any]]:
    """The flux of what the difference image shows at the source, and how to draw it."""
    kind = scene.kind
    if kind in ("sn", "star_var", "agn"):
        return scene.transient_flux(jd, band), {}
    if kind == "asteroid":
        if i != special:
            return 0.0, {}
        return 10 ** (-0.4 * (scene.extra.setdefault("mag", float(rng.uniform(17.0, 20.4))) - ZTF_ZP)), {}
    if kind == "cosmic":
        if i != special:
            return 0.0, {}
        return 10 ** (-0.4 * (float(rng.uniform(16.5, 20.0)) - ZTF_ZP)), {}
    if kind == "dipole":
        shift = rng.normal(0.0, 0.22, size=2)
        flux = scene.static_flux(band)
        sigma = fwhm * render.FWHM_TO_SIGMA
        return flux * min(1.0, 0.45 * float(np.hypot(*shift)) / sigma), {"shift": tuple(shift)}
    if kind == "bad_sub":
        h = scene.host
        mismatch = float(rng.normal(0.0, 0.18))
        core = 10 ** (-0.4 * (h.mag(band) - ZTF_ZP)) * (0.35 if h.n > 2 else 0.12)
        return abs(mismatch) * core, {"mismatch": mismatch}
    raise ValueError(f"unknown kind {kind}")


def observe(
    scene: Scene, cadence_days: float = 2.5, nan_patch_rate: float = 0.04, edge_rate: float = 0.02
) -> tuple[list[dict[str, Any]], list[tuple[np.ndarray, ...]]]:
    """All alerts the survey issues for ``scene``: candidate rows and raw (sci, ref, diff) stamps.

    An alert is issued for every exposure with |S/N| >= 5 at the source position; negative
    differences get ``isdiffpos = 'f'`` (the cuts drop them later, as they drop i-band alerts).
    ``ndethist`` and ``ncovhist`` count 3-sigma detections and coverage, history included.
    """
    rng = scene.rng(0)
    epochs = _epochs(scene, rng, cadence_days)
    static = _Static(scene)
    nb = _neighbours(scene, rng)
    ref_fwhm = float(rng.uniform(1.8, 2.3))
    _, ref_noise = _psf_noise(NOMINAL_LIMIT + 1.3, ref_fwhm)
    special = int(rng.integers(0, len(epochs))) if epochs else -1
    ncov, ndet = scene.ncovhist_base, scene.ndethist_base
    jdstarthist = scene.jdstarthist_base
    rows: list[dict[str, Any]] = []
    stamps: list[tuple[np.ndarray, ...]] = []
    for i, (jd, fid) in enumerate(epochs):
        band = BAND_OF_FID[fid]
        fwhm = float(rng.uniform(1.7, 3.2))
        limit = float(np.clip(rng.normal(NOMINAL_LIMIT, 0.3), 19.2, 21.0))
        sigma_flux, pix_noise = _psf_noise(limit, fwhm)
        flux, how = _signal(scene, jd, band, fwhm, i, special, rng)
        measured = flux + rng.normal(0.0, sigma_flux)
        snr = measured / sigma_flux
        ncov += 1
        if abs(snr) >= 3:
            ndet += 1
            if jdstarthist is None:
                jdstarthist = jd
        if abs(snr) < 5:
            continue
        rows.append(
            _alert_row(scene, rng, nb, jd, fid, fwhm, limit, measured, sigma_flux, snr, ncov, ndet, jdstarthist)
        )
        stamps.append(
            _stamps(
                scene, static, rng, band, fwhm, ref_fwhm, pix_noise, ref_noise, flux, how, nan_patch_rate, edge_rate
            )
        )
    return rows, stamps


def _alert_row(
    scene: Scene,
    rng: np.random.Generator,
    nb: dict[str, float],
    jd: float,
    fid: int,
    fwhm: float,
    limit: float,
    measured: float,
    sigma_flux: float,
    snr: float,
    ncov: int,
    ndet: int,
    jdstarthist: float,
) -> dict[str, Any]:
    kind = scene.kind
    if kind in REAL_KINDS:
        drb = 1.0 - rng.beta(1.0, 3.0 + 2.0 * abs(snr))
        chipsf = 1.0 + abs(rng.normal(0.0, 0.4)) + (snr / 40.0) ** 2
    elif kind == "cosmic":
        drb, chipsf = rng.beta(1.5, 3.0), rng.uniform(5.0, 80.0)
    else:
        drb, chipsf = rng.beta(2.0, 2.5), rng.uniform(4.0, 40.0) + (snr / 30.0) ** 2
    jitter = rng.normal(0.0, 0.08 / 3600.0, size=2)
    row = {
        "objectId": scene.object_id,
        "jd": jd,
        "fid": fid,
        "programid": 1,
        "isdiffpos": "t" if snr > 0 else "f",
        "ra": scene.ra + jitter[0] / max(np.cos(np.radians(scene.dec)), 1e-3),
        "dec": scene.dec + jitter[1],
        "magpsf": ZTF_ZP - 2.5 * np.log10(abs(measured)),
        "sigmapsf": 1.0857 / abs(snr),
        "diffmaglim": limit,
        "fwhm": fwhm,
        "chipsf": chipsf,
        "scorr": abs(snr) * rng.uniform(0.95, 1.35),
        "sky": rng.normal(0.0, 0.5),
        "ndethist": ndet,
        "ncovhist": ncov,
        "jdstarthist": jdstarthist,
        "drb": drb,
        "new_drb": drb,
        "source_set": scene.subset,
        "label": scene.label,
        "sim_kind": kind,
        "sim_peak_mag": scene.peak_mag if kind == "sn" else np.nan,
    }
    for k in ("sgscore1", "distpsnr1", "sgscore2", "distpsnr2", "nmtchps", "distnr", "magnr", "chinr", "sharpnr"):
        row[k] = nb[k]
    for k in ("distpsnr1", "distpsnr2", "distnr"):
        if row[k] >= 0:
            row[k] = abs(row[k] + rng.normal(0.0, 0.05))
    return row


def _stamps(
    scene: Scene,
    static: _Static,
    rng: np.random.Generator,
    band: str,
    fwhm: float,
    ref_fwhm: float,
    pix_noise: float,
    ref_noise: float,
    flux: float,
    how: dict,
    nan_patch_rate: float,
    edge_rate: float,
) -> tuple[np.ndarray, ...]:
    sky = rng.uniform(120.0, 260.0)
    point = scene.static_flux(band)
    ref = static.image(band, ref_fwhm, point) + sky + rng.normal(0.0, ref_noise, STAMP)
    sci = static.image(band, fwhm, point) + sky + rng.normal(0.0, pix_noise, STAMP)
    diff = rng.normal(0.0, np.hypot(pix_noise, ref_noise), STAMP)
    kind = scene.kind
    if kind in ("sn", "star_var", "agn", "asteroid"):
        new = render.point_source(STAMP, CENTRE + rng.uniform(-0.5, 0.5), CENTRE + rng.uniform(-0.5, 0.5), flux, fwhm)
        sci += new
        diff += new
    elif kind == "cosmic":
        hit = render.cosmic_ray(STAMP, CENTRE, CENTRE, flux, rng)
        sci += hit
        diff += hit
    elif kind == "dipole":
        diff += render.dipole(STAMP, CENTRE, CENTRE, point, fwhm, how["shift"])
    elif kind == "bad_sub":
        core = static.host(band)
        diff += abs(how["mismatch"]) * (render.convolve_psf(core, fwhm) - render.convolve_psf(core, fwhm * 1.35)) * 3.0
    if rng.random() < nan_patch_rate:
        mask = np.isnan(render.nan_patch(sci, rng))
        sci[mask] = np.nan
        diff[mask] = np.nan
    if rng.random() < nan_patch_rate / 2:
        ref = render.nan_patch(ref, rng)
    if rng.random() < edge_rate:  # the source sits near a CCD edge: the stamp comes back smaller
        cut = int(rng.integers(4, 24))
        if rng.random() < 0.5:
            sci, ref, diff = sci[:, :-cut], ref[:, :-cut], diff[:, :-cut]
        else:
            sci, ref, diff = sci[:-cut], ref[:-cut], diff[:-cut]
    return sci.astype(np.float32), ref.astype(np.float32), diff.astype(np.float32)
