"""Figure 4: 2-D UMAP of the penultimate-layer embeddings of the test alerts, one panel per model,
points coloured by subset (trues, dims, vars, rejects)."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib
import pandas as pd

from alertvision.atomic import atomic_path
from alertvision.evaluation.latent import UMAP_COLUMNS
from alertvision.reports.figures import DATASET_TITLES

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger(__name__)

#: The paper's legend order and a colour per subset; other subsets (say, junk) are drawn grey.
SUBSET_COLOURS = {"trues": "#1f77b4", "dims": "#2ca02c", "vars": "#ff7f0e", "rejects": "#d62728"}
OTHER_COLOUR = "0.6"
MAX_COLUMNS = 4


def subset_order(subsets: Sequence[str]) -> list[str]:
    """The paper's subsets first, in legend order, then any others alphabetically."""
    known = [s for s in SUBSET_COLOURS if s in subsets]
    return known + sorted(set(subsets) - set(known))


def _panel(ax, coords: pd.DataFrame, title: str, subsets: Sequence[str]) -> dict[str, int]:
    """Scatter one model's UMAP coordinates by subset; returns the number of points per subset."""
    counts = {}
    size = 14 if len(coords) < 2000 else 4
    for subset in subsets:
        rows = coords[coords["source_set"] == subset]
        counts[subset] = int(len(rows))
        ax.scatter(
            rows[UMAP_COLUMNS[0]],
            rows[UMAP_COLUMNS[1]],
            s=size,
            alpha=0.75,
            lw=0,
            color=SUBSET_COLOURS.get(subset, OTHER_COLOUR),
            label=f"{subset} ({len(rows)})",
        )
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=1.5, loc="best", frameon=True)
    return counts


def figure4_title(dataset: str, synthetic: bool, note: str | None = None) -> str:
    """The suptitle: what is shown, 'SYNTHETIC DATA' first when the alerts are simulated, and any note."""
    title = f"UMAP of the penultimate-layer embeddings of the {DATASET_TITLES.get(dataset, dataset)} test alerts"
    if synthetic:
        title = "SYNTHETIC DATA - " + title
    if note:
        title += f"\n({note})"
    return title


def figure4(
    panels: Sequence[tuple[str, pd.DataFrame]],
    out_pdf: str | os.PathLike,
    *,
    dataset: str,
    synthetic: bool,
    note: str | None = None,
) -> dict[str, Any]:
    """Draw one UMAP panel per (title, coordinates table) and save the PDF atomically.

    Returns what was drawn: the title, the panel titles and each panel's points per subset.
    """
    if not panels:
        raise ValueError("Figure 4 has no panel to draw")
    subsets = subset_order(sorted(set().union(*(set(c["source_set"]) for _, c in panels))))
    ncols = min(MAX_COLUMNS, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.8 * ncols, 3.8 * nrows + 0.6), squeeze=False)
    drawn: dict[str, Any] = {"panels": [], "counts": {}}
    for ax, (title, coords) in zip(list(axes.flat)[: len(panels)], panels, strict=True):
        drawn["counts"][title] = _panel(ax, coords, title, subsets)
        drawn["panels"].append(title)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    drawn["title"] = figure4_title(dataset, synthetic, note)
    fig.suptitle(drawn["title"], fontsize=11, color="firebrick" if synthetic else "black")
    fig.tight_layout()
    with atomic_path(out_pdf) as tmp:
        fig.savefig(tmp, format="pdf")
    plt.close(fig)
    log.info("Figure 4: %d panels (%s) -> %s", len(panels), ", ".join(drawn["panels"]), out_pdf)
    return drawn


def figure4_from_files(
    umap_files: Mapping[str, str | os.PathLike],
    manifest_json: str | os.PathLike,
    out_pdf: str | os.PathLike,
    note: str | None = None,
) -> dict[str, Any]:
    """Figure 4 from UMAP tables by panel title and the dataset's manifest (name, synthetic flag)."""
    manifest = json.loads(Path(manifest_json).read_text())
    panels = [(title, pd.read_parquet(path)) for title, path in umap_files.items()]
    if note:
        log.warning("Figure 4: %s", note)
    return figure4(
        panels,
        out_pdf,
        dataset=str(manifest.get("dataset", "?")),
        synthetic=bool(manifest.get("synthetic", False)),
        note=note,
    )
