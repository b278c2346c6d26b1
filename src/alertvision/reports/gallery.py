"""The outlier report: ``outliers.csv`` and ``index.html``, a page of one card per flagged alert.

Each card shows the alert's science, reference and difference cutouts (PNG files under ``img/``
beside the page, robust stretch), its Legacy Survey grz image as RGB when the ``ls`` dataset holds
the alert, its label, subset, magnitudes and each model's anomaly score, rank and classifier score.
The cards are the alerts every model flags; when no alert is flagged by all, the page shows the
alerts flagged by any and says so at the top. The page is self-contained: relative links only, no
external resource, and a small inline script marks ``<body data-images-ok="true">`` once every
image has loaded (a check for a headless browser).
"""

from __future__ import annotations

import html
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from alertvision.atomic import atomic_path, write_csv, write_text
from alertvision.data.contract import MANIFEST_FILE, Dataset, open_dataset
from alertvision.data.legacysurvey import BANDS, RGB_BANDS, rgb_indices
from alertvision.evaluation.latent import outlier_table

log = logging.getLogger(__name__)

IMG_DIR = "img"
CSV_FILE = "outliers.csv"
HTML_FILE = "index.html"
ZTF_CHANNELS = ("science", "reference", "difference")
FILTERS = {1: "g", 2: "r", 3: "i"}
CSS = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 60rem; padding: 1rem; color: #222; }
.synthetic { background: #b22222; color: #fff; padding: .5rem 1rem; font-weight: bold; border-radius: 4px; }
.note { background: #fff4d6; border-left: 4px solid #e6a700; padding: .5rem 1rem; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: .75rem 1rem; margin: 1rem 0; }
.card h2 { font-size: 1.1rem; margin: 0 0 .4rem 0; }
.card h2 small { color: #666; font-weight: normal; }
.tag { display: inline-block; padding: .1rem .5rem; border-radius: 3px; background: #eee; margin-right: .3rem; }
.tag.trues { background: #d6e6f5; } .tag.dims { background: #d9f0d9; }
.tag.vars { background: #ffe7cc; } .tag.rejects { background: #f8d4d4; }
.cutouts { display: flex; flex-wrap: wrap; gap: .5rem; margin: .5rem 0; }
.cutouts figure { margin: 0; text-align: center; font-size: .8rem; color: #555; }
.cutouts img { width: 126px; height: 126px; image-rendering: pixelated; border: 1px solid #999; display: block; }
.cutouts img.broken { outline: 3px solid red; }
table { border-collapse: collapse; font-size: .85rem; margin: .3rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: .15rem .6rem; text-align: left; }
"""
SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, broken = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (!imgs[i].complete || imgs[i].naturalWidth === 0) { broken++; imgs[i].classList.add("broken"); }
  }
  document.body.setAttribute("data-images-total", String(imgs.length));
  document.body.setAttribute("data-images-broken", String(broken));
  document.body.setAttribute("data-images-ok", broken === 0 ? "true" : "false");
});
"""


# --- images ------------------------------------------------------------------------------------


def robust_stretch(
    image: np.ndarray, lower: float = 0.5, upper: float = 99.5, asinh: float | None = 10.0
) -> np.ndarray:
    """Map an image to [0, 1]: clip at the ``lower`` and ``upper`` percentiles of its finite pixels,
    then, with ``asinh``, compress the bright end (asinh(a x) / asinh(a)). NaNs become 0."""
    x = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros(x.shape, dtype=np.float32)
    lo, hi = np.percentile(x[finite], [lower, upper])
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.float32)
    y = np.clip((np.where(finite, x, lo) - lo) / (hi - lo), 0.0, 1.0)
    if asinh:
        y = np.arcsinh(asinh * y) / np.arcsinh(asinh)
    return y.astype(np.float32)


def ztf_panels(triplet: np.ndarray) -> dict[str, np.ndarray]:
    """A (3, 63, 63) [science, reference, difference] triplet -> stretched grey images by channel.

    Science and reference get an asinh stretch; the difference, which is signed, a linear one.
    """
    return {
        name: robust_stretch(triplet[i], asinh=None if name == "difference" else 10.0)
        for i, name in enumerate(ZTF_CHANNELS)
    }


def ls_rgb(image: np.ndarray, channels: Sequence[str] = RGB_BANDS) -> np.ndarray:
    """A (3, 63, 63) Legacy Survey image whose channels are labelled ``channels`` (its manifest's: 'z'
    or 'R=z') -> (63, 63, 3) RGB with z red, r green, g blue."""
    return np.stack(
        [robust_stretch(image[i], lower=1.0, upper=99.7, asinh=8.0) for i in rgb_indices(channels)], axis=-1
    )


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a grey (H, W) or RGB (H, W, 3) image with values in [0, 1] to a PNG file, atomically."""
    import matplotlib.image  # deferred: matplotlib is heavy

    with atomic_path(path) as tmp:
        matplotlib.image.imsave(tmp, np.clip(image, 0, 1), cmap="gray", vmin=0.0, vmax=1.0, format="png")


def write_alert_images(
    alert_id: int,
    triplet: np.ndarray,
    ls_image: np.ndarray | None,
    img_dir: Path,
    ls_channels: Sequence[str] = RGB_BANDS,
) -> dict[str, str]:
    """Write an alert's PNGs into ``img_dir``; returns {panel name: path relative to the page}.
    ``ls_channels`` labels the channels of ``ls_image`` (the ``ls`` manifest's ``channels``)."""
    images = ztf_panels(triplet)
    if ls_image is not None:
        images["Legacy Survey grz"] = ls_rgb(ls_image, ls_channels)
    paths = {}
    for name, image in images.items():
        filename = f"{int(alert_id)}_{'ls' if name.startswith('Legacy') else name}.png"
        write_png(img_dir / filename, image)
        paths[name] = f"{IMG_DIR}/{filename}"
    return paths


def prune_images(img_dir: Path, keep: set[str]) -> int:
    """Remove PNGs of earlier reports that this one does not show; returns how many."""
    removed = 0
    for path in img_dir.glob("*.png"):
        if path.name not in keep:
            path.unlink()
            removed += 1
    return removed


# --- the page ----------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    """A number for the page: fixed digits, '-' when missing."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)) or pd.isna(value):
        return "-"
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def render_card(alert: Mapping[str, Any], images: Mapping[str, str], models: Mapping[str, str]) -> str:
    """One alert's card: identifiers, tags, cutouts, magnitudes and per-model scores."""
    e = html.escape
    subset = str(alert["subset"])
    label = int(alert["label"])
    figures = "".join(
        f'<figure><img src="{e(src)}" alt="{e(name)}" width="63" height="63">'
        f"<figcaption>{e(name)}</figcaption></figure>"
        for name, src in images.items()
    )
    if not any(name.startswith("Legacy") for name in images):
        figures += "<figure><figcaption>no Legacy Survey image</figcaption></figure>"
    rows = "".join(
        f"<tr><td>{e(title)}</td><td>{_fmt(alert[f'{name}_anomaly'])}</td>"
        f"<td>{_fmt(alert[f'{name}_rank'])}</td><td>{'yes' if alert[f'{name}_flagged'] else 'no'}</td>"
        f"<td>{_fmt(alert[f'{name}_classifier_score'])}</td></tr>"
        for name, title in models.items()
    )
    facts = (
        f"<tr><th>magpsf</th><td>{_fmt(alert.get('magpsf'), 2)}</td>"
        f"<th>peakmag_so_far</th><td>{_fmt(alert.get('peakmag_so_far'), 2)}</td>"
        f"<th>filter</th><td>{e(FILTERS.get(int(alert.get('fid', 0) or 0), '?'))}</td>"
        f"<th>jd</th><td>{_fmt(alert.get('jd'), 5)}</td></tr>"
    )
    return (
        f'<article class="card" id="alert-{int(alert["alert_id"])}" data-alert-id="{int(alert["alert_id"])}">'
        f"<h2>{e(str(alert['objectId']))} <small>candid {int(alert['candid'])}, alert_id {int(alert['alert_id'])}"
        f"</small></h2>"
        f'<p><span class="tag {e(subset)}">{e(subset)}</span>'
        f'<span class="tag">label {label} ({"true" if label == 1 else "not a true"})</span>'
        f'<span class="tag">flagged by {int(alert["flagged_by"])} of {len(models)}</span></p>'
        f'<div class="cutouts">{figures}</div>'
        f"<table>{facts}</table>"
        f"<table><tr><th>model</th><th>anomaly score</th><th>rank in subset</th><th>flagged</th>"
        f"<th>classifier score</th></tr>{rows}</table></article>"
    )


def render_page(cards: Sequence[str], *, intro: Sequence[str], note: str | None, synthetic: bool) -> str:
    """The whole page: a header (synthetic banner, note, description) and the cards."""
    banner = '<p class="synthetic">SYNTHETIC DATA: simulated alerts, not observations.</p>' if synthetic else ""
    note_html = f'<p class="note" id="note">{html.escape(note)}</p>' if note else ""
    intro_html = "".join(f"<p>{html.escape(p)}</p>" for p in intro)
    body = "\n".join(cards) if cards else '<p id="empty">No alert was flagged.</p>'
    title = ("SYNTHETIC DATA - " if synthetic else "") + "Outliers in the latent space"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n"
        f'<body data-cards="{len(cards)}"><h1>{html.escape(title)}</h1>{banner}{note_html}{intro_html}\n'
        f"<main>\n{body}\n</main>\n<script>{SCRIPT}</script></body></html>\n"
    )


# --- the report --------------------------------------------------------------------------------


def _open_optional(directory: str | os.PathLike | None) -> Dataset | None:
    """The dataset in ``directory``, or None when there is none (no folder or no manifest)."""
    if directory is None or not (Path(directory) / MANIFEST_FILE).is_file():
        return None
    return open_dataset(directory)


def _ls_channels(manifest: Mapping[str, Any]) -> list[str]:
    """The channel labels of an ``ls`` dataset (manifests before ``channels`` held g, r, z as ``bands``)."""
    return list(manifest.get("channels") or manifest.get("bands") or BANDS)


def _row_of(alerts: pd.DataFrame) -> dict[int, int]:
    return {int(a): i for i, a in enumerate(alerts["alert_id"].to_numpy())}


def _cards_to_show(table: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """The intersection, or the union with a note when the intersection is empty."""
    both = table[table["in_intersection"]]
    if len(both) or table.empty:
        return both, None
    return table, (
        "No alert is flagged by every model: showing the alerts flagged by at least one model "
        "(the union), most often flagged first."
    )


def build_outlier_report(
    umap_files: Mapping[str, str | os.PathLike],
    ztf_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    iforest_cfg: Mapping[str, Any],
    *,
    ls_dir: str | os.PathLike | None = None,
    titles: Mapping[str, str] | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """Find the outliers of each model's UMAP table and write ``outliers.csv``, ``index.html`` and ``img/``.

    ``umap_files`` maps a model name (e.g. ``maxvit_imagenet``) to its UMAP table; ``titles`` gives
    each a display title. Returns a summary: models, counts, whether the page shows the union.
    """
    out_dir = Path(out_dir)
    titles = {name: (titles or {}).get(name, name) for name in umap_files}
    table = outlier_table({name: pd.read_parquet(path) for name, path in umap_files.items()}, iforest_cfg)
    write_csv(out_dir / CSV_FILE, table)
    shown, union_note = _cards_to_show(table)
    ztf = open_dataset(ztf_dir)
    ls = _open_optional(ls_dir)
    (out_dir / IMG_DIR).mkdir(parents=True, exist_ok=True)
    cards, written = _render_cards(shown, ztf, ls, out_dir / IMG_DIR, titles)
    prune_images(out_dir / IMG_DIR, written)
    synthetic = ztf.synthetic
    intro = _intro(table, titles, iforest_cfg, ls is not None)
    notes = " ".join(n for n in (note, union_note) if n) or None
    write_text(out_dir / HTML_FILE, render_page(cards, intro=intro, note=notes, synthetic=synthetic))
    summary = {
        "models": list(titles),
        "n_flagged_any": int(len(table)),
        "n_intersection": int(table["in_intersection"].sum()),
        "n_cards": len(cards),
        "shows_union": union_note is not None,
        "synthetic": synthetic,
    }
    log.info("outlier report: %s", json.dumps(summary))
    return summary


def _render_cards(
    shown: pd.DataFrame, ztf: Dataset, ls: Dataset | None, img_dir: Path, titles: Mapping[str, str]
) -> tuple[list[str], set[str]]:
    """Write every shown alert's images and render its card; returns the cards and the files written."""
    ztf_row, ls_row = _row_of(ztf.alerts), (_row_of(ls.alerts) if ls is not None else {})
    extra = ["magpsf", "peakmag_so_far", "fid", "jd"]
    ls_channels = _ls_channels(ls.manifest) if ls is not None else RGB_BANDS
    cards, written = [], set()
    for alert in shown.to_dict("records"):
        aid = int(alert["alert_id"])
        if aid not in ztf_row:
            raise ValueError(f"alert {aid} ({alert['objectId']}) is not in the ZTF dataset {ztf.directory}")
        row = ztf_row[aid]
        alert.update(ztf.alerts.iloc[row][extra].to_dict())
        ls_image = np.asarray(ls.images[ls_row[aid]]) if aid in ls_row else None
        images = write_alert_images(aid, np.asarray(ztf.images[row]), ls_image, img_dir, ls_channels)
        written.update(Path(p).name for p in images.values())
        cards.append(render_card(alert, images, titles))
    return cards, written


def _intro(table: pd.DataFrame, titles: Mapping[str, str], iforest_cfg: Mapping[str, Any], has_ls: bool) -> list[str]:
    """The page's description of what the cards are."""
    n_models = len(titles)
    return [
        f"Models: {', '.join(titles.values())}. For each, an Isolation Forest ({iforest_cfg['n_estimators']} "
        f"trees, seed {iforest_cfg['seed']}) per subset on the 2-D UMAP of the penultimate-layer embeddings "
        f"of the test alerts flags the top {100 * iforest_cfg['top_fraction']:g}% of each subset by anomaly score "
        f"(at least one).",
        f"{len(table)} alerts are flagged by at least one model, {int(table['in_intersection'].sum())} by all "
        f"{n_models}. Cutouts: science, reference, difference (percentile-clipped; asinh for science and "
        f"reference, linear for the difference)"
        + (
            "; Legacy Survey grz as RGB (z red, r green, g blue) where the ls dataset holds the alert."
            if has_ls
            else "; no Legacy Survey dataset."
        ),
        "Rank in subset: 1 is the most anomalous. Classifier score: the model's sigmoid output.",
    ]
