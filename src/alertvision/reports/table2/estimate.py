"""The compute estimate of Table 2 from the training workload of a study (its grid and sweeps).

:func:`alertvision.reports.workload.workload_plan` reads a validated config into
:class:`~alertvision.reports.workload.WorkloadGroup` s (plain data: the ``table2`` rule's params);
:meth:`StudyWorkload.from_dataset` adds the training alerts of each fraction counted in the ZTF
dataset; :func:`study_hours` scales measured training rates (:func:`alertvision.reports.table2.training_record`)
to device-hours and :func:`format_estimate` writes them below Table 2.

Imports only pandas at import time: ``benchmarks/table2.py`` builds an assumed workload without the
config's jsonschema and yaml.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from alertvision.data.splits import SPLIT_COLUMNS, train_alert_counts
from alertvision.reports.workload import WorkloadGroup


def _listed(values: Iterable[Any]) -> str:
    """Distinct values in first-seen order, joined by '/'."""
    return "/".join(str(v) for v in dict.fromkeys(values))


def _percent(fraction: float) -> str:
    return f"{fraction:g}%"


def _seeds(seeds: Sequence[int]) -> str:
    seeds = sorted(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{len(seeds)} seeds ({seeds[0]}-{seeds[-1]})"
    return f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))})"


@dataclass(frozen=True)
class StudyWorkload:
    """A study's training workload: its groups of runs and the training alerts of one run per fraction.

    ``train_alerts`` maps a fraction (percent) to the training alerts of one of its runs;
    ``counted_from`` says where they come from (a dataset, or an assumption). Runs on the Legacy
    Survey dataset are counted at the same sizes (an upper bound: it keeps the sources with
    coverage). Not counted: validation and test passes (inference, a few % of the training cost),
    data loading, pre-training.
    """

    groups: tuple[WorkloadGroup, ...]
    train_alerts: Mapping[float, int]
    counted_from: str

    @classmethod
    def from_plan(
        cls, plan: Iterable[WorkloadGroup | Mapping[str, Any]], train_alerts: Mapping[float, int], counted_from: str
    ) -> "StudyWorkload":
        """A workload from :func:`~alertvision.reports.workload.workload_plan`'s groups (or
        :class:`WorkloadGroup` objects)."""
        groups = tuple(
            g
            if isinstance(g, WorkloadGroup)
            else WorkloadGroup(**{k: tuple(v) if isinstance(v, list) else v for k, v in g.items()})
            for g in plan
        )
        counts = {float(f): int(n) for f, n in train_alerts.items()}
        missing = sorted({g.fraction for g in groups} - set(counts))
        if missing:
            raise ValueError(f"no training-alert count for fraction(s) {', '.join(map(_percent, missing))}")
        return cls(groups, counts, counted_from)

    @classmethod
    def from_dataset(
        cls, plan: Iterable[Mapping[str, Any]], alerts_parquet: str | os.PathLike, splits_cfg: Mapping[str, Any]
    ) -> "StudyWorkload":
        """The plan's workload with each fraction's training alerts counted in a dataset's alerts.parquet:
        the train rows its split tables select (per-source cap, then the fraction's sample of sources)."""
        groups = [dict(g) for g in plan]
        alerts = pd.read_parquet(alerts_parquet, columns=list(SPLIT_COLUMNS))
        counts = train_alert_counts(alerts, sorted({float(g["fraction"]) for g in groups}), splits_cfg)
        cap = splits_cfg.get("max_alerts_per_source")
        sample = f"sample of train {splits_cfg.get('fraction_sampling', 'sources')}"
        how = (
            f"{alerts_parquet} (its train split after the cap of {cap} alerts per source, then each fraction's "
            f"{sample}, as the split tables select them)"
            if cap
            else f"{alerts_parquet} (its train split, each fraction's {sample}, as the split tables "
            f"select them; no per-source cap)"
        )
        return cls.from_plan(groups, counts, how)

    def archs(self) -> list[str]:
        """Architectures in first-seen order (the metadata-only model is ``none``)."""
        return list(dict.fromkeys(g.arch for g in self.groups))

    def of(self, arch: str) -> list[WorkloadGroup]:
        """The groups of one architecture (image and multi-modal)."""
        return [g for g in self.groups if g.arch == arch]

    def runs(self, arch: str) -> int:
        """Seed runs of one architecture."""
        return sum(g.runs for g in self.of(arch))

    def sweep_trials(self, arch: str) -> int:
        """Sweep trials of one architecture."""
        return sum(g.trials for g in self.of(arch))

    def grid_alerts(self, arch: str) -> float:
        """Alerts passed forward and backward by one architecture's seed runs (at their maximum epochs)."""
        return float(sum(g.runs * self.train_alerts[g.fraction] * g.epochs for g in self.of(arch)))

    def sweep_alerts(self, arch: str) -> float:
        """Alerts passed forward and backward by one architecture's sweep trials (at their maximum epochs)."""
        return float(sum(g.trials * self.train_alerts[g.fraction] * g.epochs for g in self.of(arch)))

    def describe(self) -> list[str]:
        """The assumptions as markdown lines: alerts per fraction, then one line per (architecture, modality)."""
        sizes = "; ".join(f"{_percent(f)}: {n:,}" for f, n in sorted(self.train_alerts.items()))
        lines = [f"Training alerts of one run per fraction ({sizes}) from {self.counted_from}."]
        if any("ls" in g.datasets for g in self.groups):
            lines[0] += (
                " Runs on the Legacy Survey dataset (ls) are counted at the same sizes (an upper bound: "
                "it keeps the sources with Legacy Survey coverage)."
            )
        lines.append("")
        for arch, modality in dict.fromkeys((g.arch, g.modality) for g in self.groups):
            gs = [g for g in self.groups if (g.arch, g.modality) == (arch, modality)]
            line = (
                f"- {arch}, {modality}: datasets {', '.join(dict.fromkeys(d for g in gs for d in g.datasets))}; "
                f"regimens {', '.join(dict.fromkeys(r for g in gs for r in g.regimens))}; fractions "
                f"{', '.join(_percent(f) for f in dict.fromkeys(g.fraction for g in gs))}; "
                f"{_seeds(sorted({s for g in gs for s in g.seeds}))}: {sum(g.runs for g in gs)} runs of up to "
                f"{_listed(g.epochs for g in gs)} epochs (patience {_listed(g.patience for g in gs)})"
            )
            swept = [g for g in gs if g.trials]
            if swept:
                line += (
                    f"; sweeps: {sum(g.studies for g in swept)} studies x "
                    f"{_listed(g.sweep_trials for g in swept)} "
                    f"trials = {sum(g.trials for g in swept)} trials, each of up to "
                    f"{_listed(g.epochs for g in swept)} epochs on its fraction's train split"
                )
            else:
                line += "; not swept"
            lines.append(line + ".")
        return lines


def study_hours(training: Sequence[Mapping[str, Any]], workload: StudyWorkload) -> pd.DataFrame:
    """Device-hours of the study per measured architecture at its training rates (naive and production).

    Multi-modal runs are costed at their backbone's measured rate (the metadata branch is a small MLP).
    """
    rows = []
    for rec in training:
        arch = rec["arch"]
        grid, sweeps = workload.grid_alerts(arch), workload.sweep_alerts(arch)
        total = grid + sweeps
        gs = workload.of(arch)
        rows.append(
            {
                "arch": arch,
                "input_size": rec["input_size"],
                "device": rec["device"],
                "device_type": rec.get("device_type", "unknown"),
                "runs": workload.runs(arch),
                "sweep_trials": workload.sweep_trials(arch),
                "epochs": _listed(g.epochs for g in gs),
                "patience": _listed(g.patience for g in gs),
                "alert_steps": total,
                "naive_alerts_per_s": rec["naive_alerts_per_s"],
                "production_alerts_per_s": rec["production_alerts_per_s"],
                "grid_hours_naive": grid / rec["naive_alerts_per_s"] / 3600,
                "sweep_hours_naive": sweeps / rec["naive_alerts_per_s"] / 3600,
                "hours_naive": total / rec["naive_alerts_per_s"] / 3600,
                "hours_production": total / rec["production_alerts_per_s"] / 3600,
            }
        )
    return pd.DataFrame(rows)


def format_estimate(hours: pd.DataFrame, workload: StudyWorkload) -> str:
    """The estimate as markdown: the workload it assumes, one line per architecture, the total."""
    measured = set(hours["arch"]) if len(hours) else set()
    lines = [
        "## Compute of the full study (estimate)",
        "",
        "Workload (seed runs and sweep trials of every architecture, image and multi-modal):",
        "",
        *workload.describe(),
        "",
        "Epochs are each run's configured maximum: early stopping (patience) ends runs sooner, so these hours "
        "are an upper bound. Rates: measured training bursts (forward + backward + AdamW, random data at the "
        "architecture's input size, at its training batch size); multi-modal runs at their backbone's rate. "
        "Not counted: validation/test passes, data loading, pre-training.",
    ]
    unmeasured = [a for a in workload.archs() if a not in measured]
    if unmeasured:
        skipped = "; ".join(
            f"{a} ({workload.runs(a)} runs, {workload.sweep_trials(a)} sweep trials)" for a in unmeasured
        )
        lines += ["", f"Not counted either (no training rate measured; `none` is the metadata-only model): {skipped}."]
    lines += [
        "",
        "| Architecture | Input | Device | Runs | Sweep trials | Max epochs | Patience "
        "| Train alerts/s (fp32 eager) | Train alerts/s (production) | Hours (fp32 eager) | Hours (production) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for _, r in hours.iterrows():
        lines.append(
            f"| {r['arch']} | {r['input_size']} | {r['device']} | {r['runs']} | {r['sweep_trials']} "
            f"| {r['epochs']} | {r['patience']} | {r['naive_alerts_per_s']:.0f} "
            f"| {r['production_alerts_per_s']:.0f} | {r['hours_naive']:,.1f} | {r['hours_production']:,.1f} |"
        )
    devices = ", ".join(sorted(set(hours["device"]))) if len(hours) else "-"
    types = set(hours["device_type"]) if len(hours) else set()
    unit = {frozenset({"cuda"}): "GPU-hours", frozenset({"cpu"}): "CPU-hours"}.get(frozenset(types), "device-hours")
    lines += [
        "",
        f"Total: {hours['hours_naive'].sum():,.1f} {unit} in float32 eager, "
        f"{hours['hours_production'].sum():,.1f} with production settings ({devices}); the sweeps are "
        f"{hours['sweep_hours_naive'].sum() / max(hours['hours_naive'].sum(), 1e-12):.0%} of it.",
    ]
    return "\n".join(lines) + "\n"
