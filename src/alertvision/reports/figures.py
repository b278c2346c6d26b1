"""The paper's figures, drawn from the aggregated tables."""

from __future__ import annotations

import os
from typing import Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from alertvision.atomic import atomic_path  # noqa: E402
from alertvision.evaluation.policies import POLICIES  # noqa: E402
from alertvision.study.plan import FIGURE2_DATASETS, METADATA_ONLY  # noqa: E402

DATASET_TITLES = {"ztf": "ZTF", "ls": "Legacy Survey", "lsst": "Rubin/LSST"}
ARCH_TITLES = {"convnext": "ConvNeXt", "maxvit": "MaxViT", "cnn": "CNN", "none": "metadata only"}
BASELINE_ARCH = "cnn"
REGIMEN_COLOURS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"]


def _line(
    ax,
    rows: pd.DataFrame,
    colour: str,
    label: str,
    metric: str = "roc_auc",
    style: str = "o-",
    band: str | None = None,
) -> None:
    """Median of ``metric`` against training alerts, with a band of one ``band`` column (a std) either side
    where it is known and positive."""
    rows = rows.sort_values("n_train_alerts")
    x = rows["n_train_alerts"].to_numpy(dtype=float)
    y = rows[f"{metric}_median"].to_numpy(dtype=float)
    ax.plot(x, y, style, color=colour, label=label, lw=1.6, ms=4)
    if band is not None:
        s = np.nan_to_num(rows[band].to_numpy(dtype=float))
        if (s > 0).any():
            ax.fill_between(x, y - s, y + s, color=colour, alpha=0.2, lw=0)


def band_column(table: pd.DataFrame, metric: str) -> tuple[str | None, str]:
    """The band a figure draws and its caption: one std over seeds where the table has several seeds; with
    one seed, the bootstrap std over test sources (``{metric}_bootstrap_std``) where the table has it."""
    if int(table["n_seeds"].max()) > 1:
        return f"{metric}_std", "band: one std over seeds"
    column = f"{metric}_bootstrap_std"
    if column in table and table[column].notna().any():
        return column, "band: one bootstrap std over the test sources (one seed)"
    return None, "no band (one seed, no bootstrap std)"


def _title(text: str, table: pd.DataFrame) -> tuple[str, str]:
    """The suptitle (median of N seeds; SYNTHETIC DATA first when the data are synthetic) and its colour."""
    synthetic = bool(table["synthetic"].all()) if "synthetic" in table else False
    n_seeds = int(table["n_seeds"].max())
    text += f" (median of {n_seeds} seed{'s' if n_seeds > 1 else ''})"
    return ("SYNTHETIC DATA - " + text, "firebrick") if synthetic else (text, "black")


def _synthetic_rows(table: pd.DataFrame) -> set[str]:
    """The datasets to mark SYNTHETIC in their panels' titles: those whose runs are all synthetic, when the
    table mixes synthetic and real data (when all are synthetic the suptitle says so)."""
    if "synthetic" not in table or table["synthetic"].all():
        return set()
    flags = table.groupby("dataset")["synthetic"].all()
    return {str(d) for d, synthetic in flags.items() if synthetic}


def _finish_panel(
    ax,
    drawn: dict,
    key: tuple,
    title: str,
    *,
    bottom: bool,
    ylabel: str | None,
    legend: bool,
    ylabel_size: float | None = None,
) -> None:
    """Record a panel's lines in ``drawn`` and give it the figures' common look: log x axis, grid, title,
    the x label on the bottom row, ``ylabel`` where given, a legend where asked."""
    drawn["panels"].append(key)
    drawn["lines"][key] = [line.get_label() for line in ax.get_lines()]
    drawn.setdefault("bands", {})[key] = sum(isinstance(c, PolyCollection) for c in ax.collections)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    if bottom:
        ax.set_xlabel("number of training alerts")
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=ylabel_size)
    if legend:
        ax.legend(fontsize=7, loc="lower right")


def _save(fig, out_pdf: str | os.PathLike) -> None:
    fig.tight_layout()
    with atomic_path(out_pdf) as tmp:
        fig.savefig(tmp, format="pdf")
    plt.close(fig)


def figure2(table: pd.DataFrame, out_pdf: str | os.PathLike, modality: str = "image") -> dict:
    """Test ROC AUC against number of training alerts: rows are datasets (ZTF, Legacy Survey), columns
    architectures.

    One line per pre-training regimen (median over seeds; band: one std over seeds, or with one seed the
    bootstrap std over test sources, :func:`band_column`, named in the title), the baseline CNN in grey in
    every panel of its dataset. Rows ZTF and Legacy Survey, those the table has (a new survey's runs are
    Figure 5's). The title says so when the data are synthetic; when only some datasets are, their panels' titles do.
    Returns what was drawn: the title, the band, the panels (dataset, arch), each panel's title, line labels
    and number of bands.
    """
    return _roc_auc_panels(table, out_pdf, FIGURE2_DATASETS, "Test ROC AUC against training-set size", modality)


def figure5(table: pd.DataFrame, out_pdf: str | os.PathLike, dataset: str = "lsst") -> dict:
    """Transfer to a new survey: test ROC AUC on ``dataset`` against its number of training alerts, one
    panel per architecture, one line per regimen (``ztf`` among them: the encoder of the best ZTF run),
    the survey's baseline CNN in grey; drawn as :func:`figure2` draws a row."""
    name = DATASET_TITLES.get(dataset, dataset)
    title = (
        f"Transfer to {name} (regimen ztf: the best ZTF model's encoder):\n"
        f"test ROC AUC on {name} against its training-set size"
    )
    return _roc_auc_panels(table, out_pdf, (dataset,), title, "image", note_on_own_line=True)


def _roc_auc_panels(
    table: pd.DataFrame,
    out_pdf: str | os.PathLike,
    wanted: Sequence[str],
    text: str,
    modality: str,
    note_on_own_line: bool = False,
) -> dict:
    """ROC AUC panels: a row per dataset of ``wanted`` in the table, a column per architecture; the band's
    note after the title (on a line of its own where the figure is narrow)."""
    table = table[(table["modality"] == modality) & table["dataset"].isin(list(wanted))]
    if table.empty:
        raise ValueError(f"no {modality} runs of {', '.join(wanted)} in the table")
    datasets = [d for d in wanted if d in set(table["dataset"])]
    archs = [a for a in table["arch"].unique() if a != BASELINE_ARCH] or [BASELINE_ARCH]
    regimens = sorted(set(table.loc[table["arch"] != BASELINE_ARCH, "regimen"]), key=lambda r: (r != "none", r))
    colours = {r: REGIMEN_COLOURS[i % len(REGIMEN_COLOURS)] for i, r in enumerate(regimens)}
    band, band_note = band_column(table, "roc_auc")
    drawn: dict = {"panels": [], "lines": {}, "bands": {}, "band": band, "titles": {}}
    marked = _synthetic_rows(table)
    fig, axes = plt.subplots(
        len(datasets),
        len(archs),
        figsize=(4.2 * len(archs), 3.4 * len(datasets)),
        squeeze=False,
        sharex="row",
        sharey=True,
    )
    for i, dataset in enumerate(datasets):
        for j, arch in enumerate(archs):
            ax = axes[i][j]
            base = table[(table["dataset"] == dataset) & (table["arch"] == BASELINE_ARCH)]
            if not base.empty and arch != BASELINE_ARCH:
                _line(ax, base, "0.55", "CNN baseline", band=band)
            for regimen in regimens:
                rows = table[(table["dataset"] == dataset) & (table["arch"] == arch) & (table["regimen"] == regimen)]
                if not rows.empty:
                    _line(ax, rows, colours[regimen], f"{ARCH_TITLES.get(arch, arch)}, {regimen}", band=band)
            panel = f"{DATASET_TITLES.get(dataset, dataset)}: {ARCH_TITLES.get(arch, arch)}"
            panel = f"SYNTHETIC {panel}" if dataset in marked else panel
            drawn["titles"][(dataset, arch)] = panel
            _finish_panel(
                ax,
                drawn,
                (dataset, arch),
                panel,
                bottom=i == len(datasets) - 1,
                ylabel="test ROC AUC" if j == 0 else None,
                legend=True,
            )
    title, colour = _title(text, table)
    title = f"{title}{chr(10) if note_on_own_line else '; '}{band_note}"
    fig.suptitle(title, fontsize=11, color=colour)
    _save(fig, out_pdf)
    drawn["title"] = title
    return drawn


def policy_note(policies: Sequence[str]) -> list[str]:
    """One line per policy in words, BTSbot's production triggers first and named so."""
    chosen = [POLICIES[p] for p in policies]
    return [f"BTSbot production trigger {p.name}: {p.describe()}" for p in chosen if p.production] + [
        f"{p.name}: {p.describe()}" for p in chosen if not p.production
    ]


def figure3(table: pd.DataFrame, out_pdf: str | os.PathLike, policies: str | Sequence[str] | None = None) -> dict:
    """F1 of follow-up trigger policies against number of training alerts for the multi-modal models.

    One panel row per policy (in the order given; a single name is one row; None: all four), one column per image
    backbone other than the CNN; in each panel one line per regimen (median over seeds; band: one std over
    seeds, or with one seed the bootstrap std of F1 over test sources, :func:`band_column`, named in the
    title), the multi-modal CNN baseline in grey and the metadata-only model (arch ``none``) dashed. The
    suptitle says which policies are BTSbot's production triggers and what each needs. Returns the title,
    the band, the panels (policy, arch), each panel's line labels and its number of bands.
    """
    policies = list(POLICIES) if policies is None else [policies] if isinstance(policies, str) else list(policies)
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        raise ValueError(f"unknown policies {unknown} (known: {', '.join(POLICIES)})")
    table = table[table["modality"] == "multimodal"]
    for policy in policies:
        if not (table["policy"] == policy).any():
            raise ValueError(f"no multimodal runs scored with policy {policy!r} in the table")
    table = table[table["policy"].isin(policies)]
    archs = [a for a in table["arch"].unique() if a not in (BASELINE_ARCH, METADATA_ONLY)]
    archs = archs or [a for a in (BASELINE_ARCH, METADATA_ONLY) if a in set(table["arch"])][:1]
    regimens = sorted(set(table.loc[table["arch"].isin(archs), "regimen"]), key=lambda r: (r != "none", r))
    colours = {r: REGIMEN_COLOURS[i % len(REGIMEN_COLOURS)] for i, r in enumerate(regimens)}
    band, band_note = band_column(table, "f1")
    drawn: dict = {"panels": [], "lines": {}, "bands": {}, "band": band}
    fig, axes = plt.subplots(
        len(policies),
        len(archs),
        figsize=(4.6 * len(archs), 3.1 * len(policies) + 1.2),
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    for i, policy in enumerate(policies):
        scored = table[table["policy"] == policy]
        base, meta = scored[scored["arch"] == BASELINE_ARCH], scored[scored["arch"] == METADATA_ONLY]
        name = f"{policy} (production)" if POLICIES[policy].production else policy
        for j, arch in enumerate(archs):
            ax = axes[i][j]
            if not base.empty and arch != BASELINE_ARCH:
                _line(ax, base, "0.55", "CNN baseline (multi-modal)", metric="f1", band=band)
            for regimen in regimens:
                rows = scored[(scored["arch"] == arch) & (scored["regimen"] == regimen)]
                if not rows.empty:
                    _line(
                        ax, rows, colours[regimen], f"{ARCH_TITLES.get(arch, arch)}, {regimen}", metric="f1", band=band
                    )
            if not meta.empty and arch != METADATA_ONLY:
                _line(ax, meta, "black", "metadata only", metric="f1", style="--", band=band)
            _finish_panel(
                ax,
                drawn,
                (policy, arch),
                f"{ARCH_TITLES.get(arch, arch)} + metadata: {name}",
                bottom=i == len(policies) - 1,
                ylabel=f"F1 of {policy} triggers (test sources)" if j == 0 else None,
                legend=i == 0,
                ylabel_size=9,
            )
    title, colour = _title("ZTF multi-modal models: F1 of follow-up trigger policies against training-set size", table)
    title = "\n".join([f"{title}; {band_note}", *policy_note(policies)])
    fig.suptitle(title, fontsize=10, color=colour)
    _save(fig, out_pdf)
    drawn["title"] = title
    return drawn
