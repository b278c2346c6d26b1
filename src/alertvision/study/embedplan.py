"""Which trained runs Figure 4 and the outlier report use, and where their embedding files live.

Figure 4 shows the baseline CNN and one panel per pre-training regimen of the MaxViT, each the run
of ``embed.dataset`` with the largest training fraction of the grid and its first seed. The
outlier report uses the MaxViT runs only. A grid without a MaxViT falls back to its first other
non-CNN architecture (and says so through :attr:`EmbedPlan.note`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from alertvision.data import DATASET_FILES
from alertvision.study.plan import LAYOUT, Run, largest_run, regimen_applies

BASELINE_ARCH = "cnn"
FOCUS_ARCH = "maxvit"
MODALITY = "image"
ARCH_TITLES = {"cnn": "CNN", "convnext": "ConvNeXt", "maxvit": "MaxViT"}
REGIMEN_TITLES = {
    "none": "no pre-training",
    "imagenet": "ImageNet",
    "galaxyzoo": "Galaxy Zoo",
    "synthgalaxy": "synthetic galaxies",
}


@dataclass(frozen=True)
class EmbedRun:
    """One trained run whose test-split embeddings are used."""

    dataset: str
    arch: str
    regimen: str
    fraction: str
    seed: int

    @property
    def name(self) -> str:
        """A short key for tables and columns, e.g. ``maxvit_imagenet``."""
        return f"{self.arch}_{self.regimen}"

    @property
    def title(self) -> str:
        """A panel title, e.g. ``MaxViT (ImageNet)``; the baseline is just ``CNN``."""
        arch = ARCH_TITLES.get(self.arch, self.arch)
        if self.arch == BASELINE_ARCH and self.regimen == "none":
            return arch
        return f"{arch} ({REGIMEN_TITLES.get(self.regimen, self.regimen)})"

    @property
    def run(self) -> Run:
        """The training run whose model is embedded."""
        return Run(self.dataset, MODALITY, self.arch, self.regimen, self.fraction, self.seed)

    @property
    def model_path(self) -> str:
        return LAYOUT.run_file("model.pt", self.run)

    @property
    def folder(self) -> str:
        return LAYOUT.embeddings_dir(self.dataset, self.arch, self.regimen)

    @property
    def embeddings_path(self) -> str:
        return f"{self.folder}/embeddings.parquet"

    @property
    def umap_path(self) -> str:
        return f"{self.folder}/umap.parquet"


@dataclass(frozen=True)
class EmbedPlan:
    """The runs of Figure 4 (in panel order) and of the outlier report, and a note on fallbacks."""

    figure_runs: tuple[EmbedRun, ...]
    outlier_runs: tuple[EmbedRun, ...]
    focus_arch: str
    note: str | None


def is_maxvit(config: Mapping[str, Any], arch: str) -> bool:
    """An architecture named ``maxvit`` or built from a timm MaxViT."""
    spec = config["archs"].get(arch, {})
    return arch == FOCUS_ARCH or "maxvit" in str(spec.get("timm_name", ""))


def pick_focus_arch(config: Mapping[str, Any]) -> tuple[str, str | None]:
    """The architecture whose regimens are compared: a MaxViT, else the first other non-CNN, else the CNN.

    Returns (arch, note); the note explains a fallback and is None for a MaxViT.
    """
    archs = list(config["grid"]["archs"])
    for arch in archs:
        if is_maxvit(config, arch):
            return arch, None
    for arch in archs:
        if arch != BASELINE_ARCH:
            return arch, f"the grid has no MaxViT: {ARCH_TITLES.get(arch, arch)} stands in for it"
    return archs[0], "the grid has only the CNN: its runs stand in for the MaxViT"


def run_of(config: Mapping[str, Any], arch: str, regimen: str, dataset: str | None = None) -> EmbedRun:
    """The run of (arch, regimen) that the figure uses: the largest fraction of the grid, its first seed,
    on ``dataset`` (default: ``embed.dataset``)."""
    run = largest_run(config, arch, regimen, dataset or config["embed"]["dataset"], MODALITY)
    return EmbedRun(run.dataset, arch, regimen, run.fraction, run.seed)


def embed_plan(config: Mapping[str, Any]) -> EmbedPlan:
    """The runs of Figure 4 and of the outlier report for a validated config."""
    grid = config["grid"]
    focus, note = pick_focus_arch(config)
    dataset = config["embed"]["dataset"]
    outlier_runs = tuple(
        run_of(config, focus, r) for r in grid["regimens"] if regimen_applies(config, r, focus, dataset)
    )
    figure_runs: list[EmbedRun] = []
    if BASELINE_ARCH in grid["archs"] and "none" in grid["regimens"] and focus != BASELINE_ARCH:
        figure_runs.append(run_of(config, BASELINE_ARCH, "none"))
    figure_runs.extend(outlier_runs)
    return EmbedPlan(tuple(figure_runs), outlier_runs, focus, note)


def embed_runs(config: Mapping[str, Any]) -> list[EmbedRun]:
    """Every run whose embeddings are needed (figure and report), without repeats."""
    plan = embed_plan(config)
    return list(dict.fromkeys((*plan.figure_runs, *plan.outlier_runs)))


def dataset_paths(dataset: str, prefix: str = "") -> dict[str, str]:
    """The files of a dataset folder by stem (alerts, images, manifest), keys prefixed."""
    return {f"{prefix}{name.split('.')[0]}": LAYOUT.dataset_file(name, dataset) for name in DATASET_FILES}


def embed_inputs(config: Mapping[str, Any], dataset: str, arch: str, regimen: str) -> dict[str, str]:
    """What the embedding of (dataset, arch, regimen) reads: the run's model and the dataset."""
    return {"model": run_of(config, arch, regimen, dataset=dataset).model_path, **dataset_paths(dataset)}


def outlier_inputs(config: Mapping[str, Any]) -> dict[str, str]:
    """The datasets the outlier page shows: ZTF (cutouts) and, when the study has one, Legacy Survey (grz)."""
    inputs = dataset_paths("ztf", "ztf_")
    if "ls" in config["grid"]["datasets"] or config["embed"]["dataset"] == "ls":
        inputs.update(dataset_paths("ls", "ls_"))
    return inputs
