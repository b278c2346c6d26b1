"""A SYNTHETIC galaxy corpus with Galaxy-Zoo-like volunteer votes, for offline encoder pre-training.

Each image is drawn from a few generating parameters: a smooth elliptical (Sersic n ~ 4), a disk
galaxy (n ~ 4 bulge + exponential disk seen at an inclination and position angle, with optional
2-3 logarithmic spiral arms and a bar; near edge-on disks get a dust lane), or an artefact (a
satellite streak or a bright star with diffraction spikes over a faint galaxy). Any of the
galaxies may be merging: a companion plus tidal tails (one faint tail for a minor merger, two
bright ones for a major merger). Three bands (g, r, z): bulges are redder than disks, spiral arms
bluer. The bands are blurred by a Gaussian PSF, get Gaussian noise, and are asinh-stretched into
[0, 1]; images are stored as colour images are, red, green, blue = z, r, g (the layout of the Legacy
Survey images the encoders are fine-tuned on).

The labels are vote COUNTS from ``VOLUNTEERS`` simulated volunteers walking a Galaxy-Zoo-like
decision tree (``QUESTIONS``; column ``<question>_<answer>``):

- ``smooth-or-featured`` is answered by every volunteer;
- ``disk-edge-on`` only by those who answered *featured*;
- ``has-spiral-arms`` and ``bar`` only by those who then answered edge-on *no*;
- ``merging`` by all who did not answer *artifact*.

So a question's counts sum to the number of volunteers who reached it, which can be zero. Each
question's answer probabilities follow from the generating parameters (a faint or inclined
galaxy's features are harder to see), and the counts are multinomial draws: fractions with
volunteer noise.

Image ``i`` depends on ``(seed, i)`` only (its own ``np.random.default_rng([seed, i, stream])``),
so a corpus is deterministic and any slice of it can be rendered on its own.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from alertvision.atomic import atomic_dir
from alertvision.synthetic.render import FWHM_TO_SIGMA, sersic_b

#: The decision tree's questions and their answers, in label-column order.
QUESTIONS: dict[str, list[str]] = {
    "smooth-or-featured": ["smooth", "featured", "artifact"],
    "disk-edge-on": ["yes", "no"],
    "has-spiral-arms": ["yes", "no"],
    "bar": ["strong", "weak", "no"],
    "merging": ["none", "minor", "major"],
}
VOLUNTEERS = 40
BANDS = ("g", "r", "z")
#: The stored channel order: red, green, blue = z, r, g, as the Legacy Survey colour images.
CHANNELS = ("z", "r", "g")
KINDS = ("elliptical", "disk", "artifact")
KIND_P = (0.32, 0.63, 0.05)
BARS = ("no", "weak", "strong")
BAR_P = (0.55, 0.25, 0.20)
MERGERS = ("none", "minor", "major")
MERGER_P = (0.78, 0.13, 0.09)
EDGE_ON_Q = 0.3  # a disk with a projected axis ratio below this is edge-on
CHUNK = 256
OVERSAMPLE = 2

# colours (g, r, z) relative to r
RED = np.array([0.55, 1.0, 1.35])
DISK = np.array([0.95, 1.0, 0.95])
BLUE = np.array([1.35, 1.0, 0.65])
NEUTRAL = np.array([0.85, 1.0, 1.1])
STRETCH_SOFTENING = 0.08
STRETCH_MAX = 3.0
_ARM_MEAN = 5.0 / 16.0  # mean of ((1 + cos)/2)^3 over a period


@dataclass(frozen=True)
class Morphology:
    """The generating parameters of one image. Lengths are in units of the image size."""

    kind: str
    edge_on: bool
    bar: str
    arms: int  # number of spiral arms, 0 for none
    merger: str
    brightness: float  # log10 of the relative total flux
    x0: float  # centre offset from the image centre
    y0: float
    pa: float  # position angle of the major axis (radians)
    q: float  # projected axis ratio (disk or elliptical)
    cos_i: float  # cosine of the inclination (1 for ellipticals)
    bulge_fraction: float
    n_bulge: float
    r_bulge: float  # half-light radius of the bulge (or elliptical)
    r_disk: float  # exponential scale length of the disk
    arm_amp: float
    arm_pitch: float
    arm_phase: float
    bar_fraction: float
    bar_length: float
    bar_angle: float
    psf_fwhm: float  # in pixels of a 64-pixel image
    noise: float


def _choice(rng: np.random.Generator, options: Sequence[str], p: Sequence[float]) -> str:
    return options[int(rng.choice(len(options), p=p))]


def draw_morphology(seed: int, i: int) -> Morphology:
    """The generating parameters of image ``i`` of the corpus with ``seed``."""
    rng = np.random.default_rng([seed, i, 0])
    kind = _choice(rng, KINDS, KIND_P)
    merger = _choice(rng, MERGERS, MERGER_P)
    bar = _choice(rng, BARS, BAR_P)
    x0, y0 = rng.normal(0.0, 0.012, 2)
    pa = rng.uniform(0.0, np.pi)
    brightness = rng.uniform(-0.35, 0.45)
    psf, noise = rng.uniform(1.6, 2.8), rng.uniform(0.012, 0.03)
    arm_pitch, arm_phase = np.deg2rad(rng.uniform(12.0, 30.0)), rng.uniform(0.0, 2 * np.pi)
    bar_length, bar_angle = rng.uniform(1.1, 1.7), rng.uniform(0.0, np.pi)
    if kind == "disk":
        cos_i = rng.uniform(0.0, 1.0)
        q = float(np.sqrt(cos_i**2 * (1 - 0.1**2) + 0.1**2))
        edge_on = q < EDGE_ON_Q
        arms = int(rng.choice([2, 3], p=[0.7, 0.3])) if (rng.random() < 0.7 and not edge_on) else 0
        return Morphology(
            kind,
            edge_on,
            bar,
            arms,
            merger,
            brightness,
            x0,
            y0,
            pa,
            q,
            cos_i,
            bulge_fraction=rng.uniform(0.05, 0.5),
            n_bulge=rng.uniform(3.0, 4.5),
            r_bulge=rng.uniform(0.025, 0.05),
            r_disk=rng.uniform(0.06, 0.12),
            arm_amp=rng.uniform(0.45, 0.95) if arms else 0.0,
            arm_pitch=arm_pitch,
            arm_phase=arm_phase,
            bar_fraction={"no": 0.0, "weak": rng.uniform(0.1, 0.18), "strong": rng.uniform(0.22, 0.35)}[bar],
            bar_length=bar_length,
            bar_angle=bar_angle,
            psf_fwhm=psf,
            noise=noise,
        )
    # ellipticals and artefacts: a smooth spheroid (faint under an artefact), no disk features
    return Morphology(
        kind,
        False,
        "no",
        0,
        merger if kind == "elliptical" else "none",
        brightness - (0.9 if kind == "artifact" else 0.0),
        x0,
        y0,
        pa,
        rng.uniform(0.55, 1.0),
        1.0,
        bulge_fraction=1.0,
        n_bulge=rng.uniform(3.0, 5.0),
        r_bulge=rng.uniform(0.06, 0.13),
        r_disk=0.0,
        arm_amp=0.0,
        arm_pitch=arm_pitch,
        arm_phase=arm_phase,
        bar_fraction=0.0,
        bar_length=bar_length,
        bar_angle=bar_angle,
        psf_fwhm=psf,
        noise=noise,
    )


# --- votes ------------------------------------------------------------------------------------------


def vote_columns(questions: dict[str, list[str]] = QUESTIONS) -> list[str]:
    """The label columns, ``<question>_<answer>``, in question then answer order."""
    return [f"{q}_{a}" for q, answers in questions.items() for a in answers]


def answer_probabilities(m: Morphology) -> dict[str, np.ndarray]:
    """Each question's answer probabilities for a volunteer looking at the image of ``m``."""
    visible = float(np.clip((m.brightness + 0.35) / 0.8, 0.0, 1.0))  # faint features are missed
    face_on = float(np.clip((m.cos_i - 0.25) / 0.35, 0.0, 1.0))  # inclined ones too
    level = {"no": 0, "weak": 1, "strong": 2}[m.bar]
    if m.kind == "disk":
        featured = 0.25 + 0.45 * (1 - m.bulge_fraction) + 0.25 * m.arm_amp * face_on + 0.1 * level * face_on
        featured = (0.2 if m.edge_on else 0.0) + featured * (0.6 + 0.4 * visible)
    else:
        featured = 0.06 + (0.1 if m.merger == "major" else 0.0)
    featured = min(featured, 0.95)
    artifact = 0.75 if m.kind == "artifact" else 0.02
    bar_table = np.array([[0.05, 0.12, 0.83], [0.12, 0.55, 0.33], [0.72, 0.22, 0.06]])
    bar_seen = face_on * (0.5 + 0.5 * visible) if m.kind == "disk" else 0.0
    bar = bar_seen * bar_table[level] + (1 - bar_seen) * bar_table[0]
    spiral = 0.55 + 0.4 * m.arm_amp * face_on * visible if m.arms else 0.08
    edge_on = 1.0 / (1.0 + np.exp(-(EDGE_ON_Q + 0.02 - m.q) / 0.04)) if m.kind == "disk" else 0.04
    merging = {"none": [0.9, 0.08, 0.02], "minor": [0.25, 0.6, 0.15], "major": [0.06, 0.24, 0.7]}[m.merger]
    return {
        "smooth-or-featured": np.array([(1 - artifact) * (1 - featured), (1 - artifact) * featured, artifact]),
        "disk-edge-on": np.array([edge_on, 1 - edge_on]).clip(0.03, 0.97),
        "has-spiral-arms": np.array([spiral, 1 - spiral]),
        "bar": bar,
        "merging": np.array(merging),
    }


def draw_votes(m: Morphology, rng: np.random.Generator, volunteers: int = VOLUNTEERS) -> dict[str, np.ndarray]:
    """Vote counts per question from ``volunteers`` walking the decision tree (module docstring)."""
    p = {q: v / v.sum() for q, v in answer_probabilities(m).items()}
    first = rng.multinomial(volunteers, p["smooth-or-featured"])
    edge = rng.multinomial(first[1], p["disk-edge-on"])
    return {
        "smooth-or-featured": first,
        "disk-edge-on": edge,
        "has-spiral-arms": rng.multinomial(edge[1], p["has-spiral-arms"]),
        "bar": rng.multinomial(edge[1], p["bar"]),
        "merging": rng.multinomial(volunteers - first[2], p["merging"]),
    }


def galaxy_votes(indices: Iterable[int], seed: int, volunteers: int = VOLUNTEERS) -> pd.DataFrame:
    """Vote counts (int) of images ``indices``: one row per image, columns :func:`vote_columns`."""
    rows = []
    for i in indices:
        votes = draw_votes(draw_morphology(seed, i), np.random.default_rng([seed, i, 1]), volunteers)
        rows.append(np.concatenate([votes[q] for q in QUESTIONS]))
    counts = np.array(rows, dtype=np.int64).reshape(-1, len(vote_columns()))
    return pd.DataFrame(counts, columns=vote_columns())


def galaxy_truth(indices: Iterable[int], seed: int) -> pd.DataFrame:
    """The generating parameters of images ``indices``, one row per image."""
    return pd.DataFrame([asdict(draw_morphology(seed, i)) for i in indices])


# --- images -------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel centres, in units of the image size, relative to the image centre."""
    k = size * OVERSAMPLE
    axis = ((np.arange(k) + 0.5) / OVERSAMPLE - 0.5 - (size - 1) / 2.0) / size
    return axis[None, :], axis[:, None]  # x (columns), y (rows)


def _rotate(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    return x * c + y * s, -x * s + y * c


def _sersic(r: np.ndarray, r_e: float, n: float) -> np.ndarray:
    """A Sersic profile of unit total flux over the grid."""
    img = np.exp(-sersic_b(n) * (r / r_e) ** (1.0 / n))
    return img / img.sum()


def _disk_components(m: Morphology, u: np.ndarray, v: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, colour) of the disk, its arms and its bar, in the galaxy frame (u along the major axis)."""
    vd = v / m.q  # de-projected onto the disk plane
    r = np.hypot(u, vd)
    disk = np.exp(-r / m.r_disk)
    arms = np.zeros_like(disk)
    if m.arms:
        theta = np.arctan2(vd, u)
        winding = np.log(np.maximum(r, 1e-4) / m.r_disk) / np.tan(m.arm_pitch)
        pattern = ((1 + np.cos(m.arms * (theta - m.arm_phase) - m.arms * winding)) / 2) ** 3 / _ARM_MEAN
        weight = m.arm_amp * (1 - np.exp(-((r / m.r_disk) ** 2)))  # no arms inside the bulge
        arms, disk = disk * weight * pattern, disk * (1 - weight)
    total = (disk.sum() + arms.sum()) / (1 - m.bar_fraction)
    out = [(disk / total, DISK), (arms / total, BLUE)]
    if m.bar_fraction > 0:
        ub, vb = _rotate(u, vd, m.bar_angle)
        length = m.bar_length * m.r_disk
        bar = np.exp(-(((ub / length) ** 2 + (vb / (0.25 * length)) ** 2) ** 1.5))  # flat-topped, sharp-ended
        out.append((bar * (m.bar_fraction / bar.sum()), NEUTRAL))
    return out


def _tails(m: Morphology, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    """Tidal tails: Gaussian blobs along logarithmic spirals leaving the galaxy, unit total flux."""
    out = np.zeros(np.broadcast_shapes(x.shape, y.shape))
    for _ in range(count):
        start, span, r0 = rng.uniform(0, 2 * np.pi), rng.uniform(1.5, 3.0), rng.uniform(0.06, 0.1)
        sign = rng.choice([-1.0, 1.0])
        for t in np.linspace(0.0, span, 12):
            r = r0 * np.exp(0.35 * t)
            cx, cy = m.x0 + r * np.cos(start + sign * t), m.y0 + r * np.sin(start + sign * t)
            w = 0.012 + 0.006 * t
            out += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * w * w)) * np.exp(-0.3 * t) * w
    return out / out.sum()


def _artifact(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A satellite streak or a bright star with diffraction spikes, in flux per sub-pixel."""
    if rng.random() < 0.5:
        angle, offset = rng.uniform(0, np.pi), rng.uniform(-0.3, 0.3)
        d = x * np.sin(angle) - y * np.cos(angle) - offset
        return 0.6 * np.exp(-0.5 * (d / 0.012) ** 2)
    sx, sy = rng.uniform(-0.3, 0.3, 2)
    u, v = _rotate(x - sx, y - sy, rng.uniform(0, np.pi / 2))
    core = 30.0 * np.exp(-0.5 * (u * u + v * v) / 0.012**2)
    spikes = np.exp(-np.abs(u) / 0.15 - 0.5 * (v / 0.006) ** 2) + np.exp(-np.abs(v) / 0.15 - 0.5 * (u / 0.006) ** 2)
    return core + 1.5 * spikes


def render_galaxy(m: Morphology, size: int, rng: np.random.Generator) -> np.ndarray:
    """The (3, size, size) float32 image in [0, 1] of morphology ``m``; ``rng`` draws noise and details."""
    x, y = _grid(size)
    x, y = x - m.x0, y - m.y0
    u, v = _rotate(x, y, m.pa)
    flux = 10.0**m.brightness * 0.04 * size**2  # the same surface brightness at any size
    bulge_q = m.q if m.kind != "disk" else max(m.q, 0.6 + 0.4 * m.cos_i)
    r_bulge = np.hypot(u, v / bulge_q)
    components = [(_sersic(r_bulge, m.r_bulge, m.n_bulge) * m.bulge_fraction, RED)]
    if m.kind == "disk":
        components += [(img * (1 - m.bulge_fraction), c) for img, c in _disk_components(m, u, v)]
    bands = sum(img[None] * colour[:, None, None] for img, colour in components) * flux
    if m.edge_on:  # a dust lane along the major axis, deepest in g
        lane = np.exp(-0.5 * (v / (0.25 * m.q * m.r_disk)) ** 2) * np.exp(-np.abs(u) / (3 * m.r_disk))
        bands = bands * (1 - np.array([0.7, 0.5, 0.3])[:, None, None] * lane)
    if m.merger != "none":
        major = m.merger == "major"
        ratio = rng.uniform(0.4, 1.0) if major else rng.uniform(0.08, 0.25)
        sep, angle = rng.uniform(0.12, 0.28), rng.uniform(0, 2 * np.pi)
        cu, cv = _rotate(x - sep * np.cos(angle), y - sep * np.sin(angle), rng.uniform(0, np.pi))
        companion = _sersic(
            np.hypot(cu, cv / rng.uniform(0.5, 1.0)), 0.05 * np.sqrt(ratio) + 0.01, rng.uniform(1.0, 4.0)
        )
        tails = _tails(m, x + m.x0, y + m.y0, rng, 2 if major else 1)
        bands = bands + flux * (
            ratio * companion[None] * NEUTRAL[:, None, None]
            + (0.3 if major else 0.12) * tails[None] * DISK[:, None, None]
        )
    if m.kind == "artifact":
        bands = bands + _artifact(x + m.x0, y + m.y0, rng)[None] * np.ones(3)[:, None, None]
    bands = bands.reshape(3, size, OVERSAMPLE, size, OVERSAMPLE).sum(axis=(2, 4))
    sigma = m.psf_fwhm * FWHM_TO_SIGMA * size / 64.0
    bands = gaussian_filter(bands, (0.0, sigma, sigma), mode="constant", truncate=3.0)
    bands = bands + m.noise * rng.standard_normal(bands.shape)
    stretched = np.arcsinh(bands / STRETCH_SOFTENING) / np.arcsinh(STRETCH_MAX / STRETCH_SOFTENING)
    return np.clip(stretched[[BANDS.index(b) for b in CHANNELS]], 0.0, 1.0).astype(np.float32)


def galaxy_images(indices: Iterable[int], size: int, seed: int) -> np.ndarray:
    """Images ``indices`` of the corpus with ``seed``: (len, 3, size, size) float32 in [0, 1]."""
    indices = list(indices)
    out = np.empty((len(indices), 3, size, size), dtype=np.float32)
    for k, i in enumerate(indices):
        out[k] = render_galaxy(draw_morphology(seed, i), size, np.random.default_rng([seed, i, 2]))
    return out


def galaxy_corpus(n: int, size: int, seed: int) -> tuple[np.ndarray, pd.DataFrame, dict[str, list[str]]]:
    """``n`` images (n, 3, size, size) float32 in [0, 1], their vote counts, and the questions."""
    return galaxy_images(range(n), size, seed), galaxy_votes(range(n), seed), {q: list(a) for q, a in QUESTIONS.items()}


# --- on disk -----------------------------------------------------------------------------------------


def write_galaxy_corpus(
    out_dir: str | os.PathLike, n: int, size: int, seed: int, progress: bool = True, volunteers: int = VOLUNTEERS
) -> dict:
    """Write the corpus folder: images.npy, labels.parquet, truth.parquet, manifest.json. Returns the manifest.

    ``images.npy`` is (n, 3, size, size) float32 in [0, 1]; ``labels.parquet`` has an ``image``
    column (the row of images.npy) and the vote counts; ``truth.parquet`` the generating
    parameters. Images are rendered and written a chunk at a time.
    """
    if n < 1 or size < 8:
        raise ValueError(f"a galaxy corpus needs n >= 1 and size >= 8 (got n={n}, size={size})")
    manifest = {
        "synthetic": True,
        "kind": "galaxy-corpus",
        "n_images": int(n),
        "size": int(size),
        "seed": int(seed),
        "volunteers": int(volunteers),
        "bands": list(CHANNELS),
        "questions": {q: list(a) for q, a in QUESTIONS.items()},
        "note": "SYNTHETIC galaxies with simulated volunteer votes (alertvision.synthetic.galaxies)",
    }
    with atomic_dir(out_dir) as tmp:
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.float32, shape=(n, 3, size, size))
        for start in tqdm(range(0, n, CHUNK), desc="synthetic galaxies", unit="chunk", disable=not progress):
            stop = min(n, start + CHUNK)
            images[start:stop] = galaxy_images(range(start, stop), size, seed)
        images.flush()
        del images
        votes = galaxy_votes(range(n), seed, volunteers)
        votes.insert(0, "image", np.arange(n, dtype=np.int64))
        votes.to_parquet(tmp / "labels.parquet", index=False)
        truth = galaxy_truth(range(n), seed)
        truth.insert(0, "image", np.arange(n, dtype=np.int64))
        truth.to_parquet(tmp / "truth.parquet", index=False)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
