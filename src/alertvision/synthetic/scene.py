"""The synthetic sky around one source: what is there (host, stars, the variable) and how it varies.

A :class:`Scene` is drawn from ``(seed, index)`` alone, so the ZTF alerts and the Legacy Survey
image of a source are made from the same sky, whichever step asks for it.

Subsets and the physics that makes them (all magnitudes AB, r band unless said otherwise):
- ``trues``: a supernova-like transient peaking brighter than 18.5 mag in a host galaxy whose
  distance follows from the peak (M_peak ~ -19), so nearer, larger hosts for brighter events.
- ``dims``: the same physics, peaking fainter than 18.5 mag.
- ``vars``: a variable star (host-less point source, PS1 star score ~1) or an AGN at a galaxy's
  nucleus, both with long detection histories.
- ``rejects``: bogus or uninteresting detections: subtraction dipoles at bright stars, poor
  subtraction of a galaxy core, cosmic rays, and moving objects seen once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from alertvision.data.splits import allot

SUBSETS: tuple[str, ...] = ("trues", "dims", "vars", "rejects")
LABELS = {"trues": 1, "dims": 0, "vars": 0, "rejects": 0}
ZTF_ZP = 26.3  # ZTF science zero point (counts)
JD_START = 2458850.5  # 2020-01-01
BAND_OF_FID = {1: "g", 2: "r", 3: "i"}
PS1_DEPTH = 22.5  # faintest PS1 counterpart that gets a star/galaxy score
ZTF_REF_DEPTH = 21.5  # faintest source in the ZTF reference catalogue (distnr, chinr, sharpnr)

KINDS = {
    "trues": ("sn",),
    "dims": ("sn",),
    "vars": ("star_var", "agn"),
    "rejects": ("dipole", "bad_sub", "cosmic", "asteroid"),
}
KIND_WEIGHTS = {
    "trues": (1.0,),
    "dims": (1.0,),
    "vars": (0.55, 0.45),
    "rejects": (0.35, 0.2, 0.2, 0.25),
}


@dataclass(frozen=True)
class Galaxy:
    """A Sersic galaxy; (dx, dy) is its centre relative to the source in arcsec (+x west, +y north)."""

    dx: float
    dy: float
    mag_r: float
    r_e: float  # arcsec
    n: float
    q: float
    pa: float  # radians
    g_r: float
    r_z: float

    def mag(self, band: str) -> float:
        return {
            "g": self.mag_r + self.g_r,
            "r": self.mag_r,
            "i": self.mag_r - 0.5 * self.r_z,
            "z": self.mag_r - self.r_z,
        }[band]


@dataclass(frozen=True)
class Star:
    """A point source; (dx, dy) relative to the source in arcsec (+x west, +y north)."""

    dx: float
    dy: float
    mag_r: float
    g_r: float
    r_z: float

    def mag(self, band: str) -> float:
        return {
            "g": self.mag_r + self.g_r,
            "r": self.mag_r,
            "i": self.mag_r - 0.5 * self.r_z,
            "z": self.mag_r - self.r_z,
        }[band]


@dataclass
class Scene:
    """Everything about one synthetic source that does not change from alert to alert."""

    index: int
    object_id: str
    subset: str
    kind: str
    ra: float
    dec: float
    host: Galaxy | None
    stars: list[Star]
    seed_words: tuple[int, int]
    # light curve
    t_peak: float = 0.0
    peak_mag: float = 99.0
    tau_rise: float = 3.0
    tau_fall: float = 25.0
    colour_g_r: float = 0.0
    var_mean_mag: float = 99.0
    var_amp: float = 0.0
    var_period: float = 1.0
    var_phase: float = 0.0
    # survey
    season_start: float = JD_START
    season_length: float = 30.0
    ncovhist_base: int = 0
    ndethist_base: int = 0
    jdstarthist_base: float | None = None
    ps1_background: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> int:
        return LABELS[self.subset]

    def rng(self, stream: int) -> np.random.Generator:
        """An independent generator for one use of this scene (0: alerts, 1: Legacy Survey)."""
        return np.random.default_rng(np.random.SeedSequence([*self.seed_words, stream]))

    # --- the variable part -------------------------------------------------------------------
    def transient_flux(self, jd: float, band: str) -> float:
        """Flux (ZTF counts) of what is new at the source position relative to the reference."""
        if self.kind == "sn":
            dt = jd - self.t_peak
            # Bazin-like: exponential decline, logistic rise; normalised to 1 at peak
            t_max = (
                self.tau_rise * np.log(self.tau_fall / self.tau_rise - 1.0)
                if self.tau_fall > 2 * self.tau_rise
                else 0.0
            )

            def bazin(t: float) -> float:
                return float(np.exp(-t / self.tau_fall) / (1.0 + np.exp(-t / self.tau_rise)))

            shape = bazin(dt + t_max) / bazin(t_max)
            colour = self.colour_g_r + 0.015 * max(dt, 0.0) if band == "g" else 0.0
            return shape * 10 ** (-0.4 * (self.peak_mag + colour - ZTF_ZP))
        if self.kind in ("star_var", "agn"):
            colour = 0.3 if band == "g" else 0.0
            base = 10 ** (-0.4 * (self.var_mean_mag + colour - ZTF_ZP))
            phase = 2 * np.pi * (jd - JD_START) / self.var_period + self.var_phase
            wobble = np.sin(phase) + 0.35 * np.sin(2.3 * phase + 1.0)
            return base * (10 ** (-0.4 * self.var_amp * wobble) - 1.0)
        return 0.0

    def static_flux(self, band: str) -> float:
        """Flux (ZTF counts) of the point source the reference holds at the source position."""
        if self.kind in ("star_var", "agn"):
            colour = 0.3 if band == "g" else 0.0
            return 10 ** (-0.4 * (self.var_mean_mag + colour - ZTF_ZP))
        if self.kind == "dipole":
            return 10 ** (-0.4 * (self.extra["star_mag"] + (0.5 if band == "g" else 0.0) - ZTF_ZP))
        return 0.0

    # --- catalogue neighbours ------------------------------------------------------------------
    def catalogue(self) -> list[tuple[float, float, float, bool]]:
        """Objects near the source as (distance arcsec, r mag, PS1 star score, is_galaxy), nearest first."""
        objs: list[tuple[float, float, float, bool]] = []
        rng = self.rng(2)
        if self.host is not None:
            d = float(np.hypot(self.host.dx, self.host.dy))
            objs.append((d, self.host.mag_r, float(rng.uniform(0.0, 0.25)), True))
        for s in self.stars:
            d = float(np.hypot(s.dx, s.dy))
            objs.append((d, s.mag_r, float(rng.uniform(0.9, 1.0)), False))
        if self.kind == "star_var":
            objs.append((float(abs(rng.normal(0.12, 0.06))), self.var_mean_mag, float(rng.uniform(0.95, 1.0)), False))
        if self.kind == "dipole":
            objs.append(
                (float(abs(rng.normal(0.6, 0.3))), self.extra["star_mag"], float(rng.uniform(0.97, 1.0)), False)
            )
        objs.sort(key=lambda o: o[0])
        return objs


def object_id(index: int, jd: float) -> str:
    """A ZTF-like name that cannot be mistaken for a real one: 'SYN' + year + 7 letters."""
    year = 20 + int((jd - JD_START) // 365.25)
    letters = []
    n = index
    for _ in range(7):
        n, r = divmod(n, 26)
        letters.append(chr(ord("a") + r))
    return f"SYN{year:02d}{''.join(reversed(letters))}"


#: the first synthetic Rubin diaObjectId (source index 0); Rubin's own ids are far below it
LSST_DIA_OBJECT_BASE = 7_000_000_000_000_000_000


def lsst_object_id(index: int) -> int:
    """The diaObjectId of source ``index`` in the synthetic Rubin sky (its name there, as
    :func:`object_id` is its name in the synthetic ZTF sky)."""
    return LSST_DIA_OBJECT_BASE + int(index)


def _draw_stars(rng: np.random.Generator, mean: float) -> list[Star]:
    stars = []
    for _ in range(int(rng.poisson(mean))):
        r = 30.0 * np.sqrt(rng.uniform(0.02, 1.0))
        a = rng.uniform(0, 2 * np.pi)
        stars.append(
            Star(
                float(r * np.cos(a)),
                float(r * np.sin(a)),
                float(rng.uniform(14.5, 21.5)),
                float(rng.uniform(0.2, 1.2)),
                float(rng.uniform(0.0, 0.6)),
            )
        )
    return stars


def _draw_galaxy(rng: np.random.Generator, mu: float, dx: float, dy: float) -> Galaxy:
    """A galaxy at distance modulus ``mu`` centred at (dx, dy) arcsec from the source."""
    abs_mag = rng.normal(-20.6, 1.0)
    d_mpc = 10 ** ((mu - 25.0) / 5.0)
    r_e_kpc = float(np.exp(rng.normal(np.log(3.0), 0.4)))
    r_e = max(0.6, r_e_kpc / (d_mpc * 1e3) * 206265.0)
    early = rng.random() < 0.3
    return Galaxy(
        dx=dx,
        dy=dy,
        mag_r=float(mu + abs_mag),
        r_e=float(min(r_e, 12.0)),
        n=4.0 if early else 1.0,
        q=float(rng.uniform(0.35, 1.0)),
        pa=float(rng.uniform(0, np.pi)),
        g_r=float(rng.normal(0.75 if early else 0.5, 0.1)),
        r_z=float(rng.normal(0.45, 0.1)),
    )


def draw_scene(index: int, subset: str, seed: int, season_days: Sequence[float], star_density: float = 1.5) -> Scene:
    """Draw the scene of source ``index`` of ``subset`` from ``seed`` alone."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 0]))
    kinds, weights = KINDS[subset], KIND_WEIGHTS[subset]
    kind = str(rng.choice(kinds, p=np.asarray(weights) / sum(weights)))
    # ZTF sky: dec > -30, uniform on the sphere
    ra = float(rng.uniform(0, 360))
    dec = float(np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-30)), 1.0))))
    season_start = JD_START + float(rng.uniform(0, 700))
    season_length = float(rng.uniform(*season_days))
    stars = _draw_stars(rng, star_density)
    scene = Scene(
        index=index,
        object_id=object_id(index, season_start),
        subset=subset,
        kind=kind,
        ra=ra,
        dec=dec,
        host=None,
        stars=stars,
        seed_words=(int(seed), int(index)),
        season_start=season_start,
        season_length=season_length,
        ncovhist_base=int(rng.integers(30, 1200)),
        ps1_background=int(rng.poisson(8)),
    )

    if kind == "sn":
        peak = rng.uniform(15.8, 18.5) if subset == "trues" else rng.uniform(18.5, 19.9)
        scene.peak_mag = float(peak)
        scene.t_peak = season_start + float(rng.uniform(4, 18))
        scene.tau_rise = float(rng.uniform(1.5, 4.5))
        scene.tau_fall = float(rng.uniform(14, 45))
        scene.colour_g_r = float(rng.normal(-0.05, 0.1))
        mu = peak - rng.normal(-19.1, 0.6)
        if rng.random() < 0.94:
            galaxy = _draw_galaxy(rng, mu, 0.0, 0.0)
            r = galaxy.r_e * float(rng.gamma(2.0, 0.45))
            a = rng.uniform(0, 2 * np.pi)
            scene.host = Galaxy(**{**galaxy.__dict__, "dx": float(r * np.cos(a)), "dy": float(r * np.sin(a))})
    elif kind == "star_var":
        scene.var_mean_mag = float(rng.uniform(14.5, 19.5))
        scene.var_amp = float(rng.uniform(0.08, 0.6))
        scene.var_period = float(np.exp(rng.uniform(np.log(0.3), np.log(80))))
        scene.var_phase = float(rng.uniform(0, 2 * np.pi))
        scene.ndethist_base = int(rng.integers(10, 400))
    elif kind == "agn":
        mu = float(rng.uniform(37.0, 40.5))
        scene.host = _draw_galaxy(rng, mu, float(rng.normal(0, 0.1)), float(rng.normal(0, 0.1)))
        scene.var_mean_mag = float(rng.uniform(17.5, 20.0))
        scene.var_amp = float(rng.uniform(0.15, 0.5))
        scene.var_period = float(rng.uniform(30, 300))
        scene.var_phase = float(rng.uniform(0, 2 * np.pi))
        scene.ndethist_base = int(rng.integers(5, 200))
    elif kind == "dipole":
        scene.extra["star_mag"] = float(rng.uniform(12.5, 15.5))
        scene.ndethist_base = int(rng.integers(0, 60))
    elif kind == "bad_sub":
        mu = float(rng.uniform(33.5, 36.5))
        scene.host = _draw_galaxy(rng, mu, float(rng.normal(0, 0.3)), float(rng.normal(0, 0.3)))
        scene.ndethist_base = int(rng.integers(0, 40))
    elif kind == "asteroid":
        scene.stars = _draw_stars(rng, 0.6 * star_density)
    scene.ncovhist_base = max(scene.ncovhist_base, scene.ndethist_base + int(rng.integers(5, 300)))
    if scene.ndethist_base > 0:
        scene.jdstarthist_base = season_start - float(rng.uniform(30, 900))
    return scene


def draw_scenes(
    n_sources: int, fractions: dict[str, float], seed: int, season_days: Sequence[float], star_density: float = 1.5
) -> list[Scene]:
    """All scenes of a synthetic dataset: exact subset counts, shuffled with the seed."""
    counts = allot(n_sources, [fractions[s] for s in SUBSETS])
    subsets = np.repeat(np.array(SUBSETS), counts)
    np.random.default_rng(np.random.SeedSequence([seed, 1 << 20])).shuffle(subsets)
    return [draw_scene(i, str(s), seed, season_days, star_density) for i, s in enumerate(subsets)]
