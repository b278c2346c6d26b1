"""The training workload of a study (its grid and sweeps), as Table 2's compute estimate needs it.

:func:`workload_plan` reads a validated config into :class:`WorkloadGroup` s (plain data: the
``table2`` rule's params, so that a changed grid, epochs or sweep reruns only that job). Light on
purpose: Snakemake imports it to plan (no torch, no pandas), and ``benchmarks/table2.py`` imports
it without the config's jsonschema and yaml.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator, Mapping


@dataclass(frozen=True)
class WorkloadGroup:
    """The runs of one (architecture, modality, training fraction) of a study, and the sweeps before them.

    ``runs``: seed runs (every dataset, regimen and seed of the group). ``epochs``: each run's
    configured epochs, an upper bound (early stopping after ``patience`` epochs without a lower
    validation loss ends runs sooner). ``studies``: sweep studies (one per dataset and regimen; 0:
    not swept) of ``sweep_trials`` trials, each training on the fraction's train split for up to
    ``epochs`` epochs, as a seed run does.
    """

    arch: str
    modality: str
    fraction: float
    datasets: tuple[str, ...]
    regimens: tuple[str, ...]
    seeds: tuple[int, ...]
    runs: int
    epochs: int
    patience: int
    studies: int = 0
    sweep_trials: int = 0

    @property
    def trials(self) -> int:
        """Sweep trials of the group."""
        return self.studies * self.sweep_trials


def workload_groups(cells: Iterable[Mapping[str, Any]]) -> list[WorkloadGroup]:
    """Runs grouped by (arch, modality, fraction, epochs, patience, sweep trials), in first-seen order.

    A cell is one run: ``arch``, ``modality``, ``dataset``, ``regimen``, ``fraction`` (percent),
    ``seed``, ``epochs``, ``patience`` and ``sweep_trials`` (per study of its configuration; 0: not swept).
    """
    grouped: dict[tuple, list[Mapping[str, Any]]] = {}
    for c in cells:
        key = (
            c["arch"],
            c["modality"],
            float(c["fraction"]),
            int(c["epochs"]),
            int(c["patience"]),
            int(c["sweep_trials"]),
        )
        grouped.setdefault(key, []).append(c)
    groups = []
    for (arch, modality, fraction, epochs, patience, trials), members in grouped.items():
        studies = {(c["dataset"], c["regimen"]) for c in members} if trials else set()
        groups.append(
            WorkloadGroup(
                arch,
                modality,
                fraction,
                datasets=tuple(dict.fromkeys(c["dataset"] for c in members)),
                regimens=tuple(dict.fromkeys(c["regimen"] for c in members)),
                seeds=tuple(sorted({int(c["seed"]) for c in members})),
                runs=len(members),
                epochs=epochs,
                patience=patience,
                studies=len(studies),
                sweep_trials=trials,
            )
        )
    return groups


def workload_plan(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What the compute estimate needs from a validated config, as plain data (the ``table2`` rule's params).

    Every run of :func:`alertvision.study.plan.grid_cells` (image and multi-modal runs, only the regimens
    each architecture is trained with, the metadata-only model), with the epochs and patience of
    :func:`~alertvision.config.training_params` and the sweep trials of
    :func:`~alertvision.config.sweep_params`, grouped by :func:`workload_groups`.
    """
    # deferred: jsonschema and yaml, which benchmarks/table2.py runs without
    from alertvision.config import grid_cells
    from alertvision.study.jobs import sweep_params, training_params

    def cells() -> Iterator[dict[str, Any]]:
        for cell in grid_cells(config):
            training = training_params(config, cell["arch"], cell["modality"])
            yield {
                **cell,
                "epochs": training["epochs"],
                "patience": training["patience"],
                "sweep_trials": sweep_params(config, cell["arch"], modality=cell["modality"])["trials"],
            }

    return [asdict(g) for g in workload_groups(cells())]
