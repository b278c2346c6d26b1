"""The study plan: which runs the grid holds and where every file of a study lives.

This is the one module that spells the ``results/`` and ``resources/`` layout, and the one home of the
grid (:func:`grid_cells`, :func:`grid_runs`) and of what depends on paths (a pre-trained regimen's
weights and corpus). It reads the values of a validated config and imports nothing of the library,
so the config's checks (:mod:`alertvision.config`) and every layer above can ask it. The Snakemake rules
(through ``workflow/rules/common.smk``), the CLI, Figure 4's run selection and the sweeps all ask
it. Every path method gives a concrete path for concrete values and a Snakemake wildcard pattern
when called with the defaults (``"{dataset}"`` and so on), so a rule's output and the code that
reads it can never disagree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator, Mapping

#: The files of one training run (one seed of a grid cell).
RUN_FILES = ("model.pt", "history.csv", "metrics.json", "predictions.parquet")

#: The wildcard names of one training run, in path order.
RUN_FIELDS = ("dataset", "modality", "arch", "regimen", "fraction", "seed")
#: Each field as a Snakemake wildcard: the values that turn a path into a rule's pattern.
WILDCARDS = {k: f"{{{k}}}" for k in RUN_FIELDS}


@dataclass(frozen=True)
class Run:
    """One training run of the grid: a (dataset, modality, arch, regimen, fraction, seed) cell.

    ``fraction`` is the path form of the training fraction (see :func:`format_fraction`).
    """

    dataset: str
    modality: str
    arch: str
    regimen: str
    fraction: str
    seed: int

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "Run":
        """A run from Snakemake wildcards or a dict holding the six fields (``seed`` as text or number)."""
        return cls(*(str(values[k]) for k in RUN_FIELDS[:-1]), seed=int(values["seed"]))

    def values(self) -> dict[str, Any]:
        """The six fields as a dict (the ``run_info`` a run records in metrics.json)."""
        return asdict(self)

    @property
    def configuration(self) -> dict[str, str]:
        """The fields without the seed: what a sweep tunes once for every seed."""
        return {k: str(v) for k, v in asdict(self).items() if k != "seed"}


@dataclass(frozen=True)
class Layout:
    """Where a study's files live, under a results root and a resources root (weights, corpora)."""

    results: str = "results"
    resources: str = "resources"

    # -- datasets and splits ------------------------------------------------------------------------
    def dataset_dir(self, dataset: str = "{dataset}") -> str:
        """A dataset folder (alerts.parquet, images.npy, manifest.json)."""
        return f"{self.results}/data/{dataset}"

    def dataset_file(self, name: str, dataset: str = "{dataset}") -> str:
        return f"{self.dataset_dir(dataset)}/{name}"

    def inputs_fingerprint(self, dataset: str = "ztf") -> str:
        """Name, size and digest of every file a dataset's ingest reads (an input of the ingest)."""
        return f"{self.dataset_dir(dataset)}.inputs.tsv"

    def split_file(self, dataset: str = "{dataset}", fraction: str = "{fraction}") -> str:
        """The split table of one training fraction."""
        return f"{self.results}/splits/{dataset}/f{fraction}.parquet"

    # -- training runs, sweeps, embeddings ----------------------------------------------------------
    def _cell_dir(self, kind: str, run: Run | None) -> str:
        """``results/<kind>/{dataset}/{modality}/{arch}/{regimen}/f{fraction}/s{seed}``, concrete or a pattern."""
        v = run.values() if run is not None else WILDCARDS
        return (
            f"{self.results}/{kind}/{v['dataset']}/{v['modality']}/{v['arch']}/{v['regimen']}/"
            f"f{v['fraction']}/s{v['seed']}"
        )

    def run_dir(self, run: Run | None = None) -> str:
        """A run's folder (model.pt, history.csv, metrics.json, predictions.parquet); the pattern without a run."""
        return self._cell_dir("runs", run)

    def run_file(self, name: str, run: Run | None = None) -> str:
        return f"{self.run_dir(run)}/{name}"

    def sweep_dir(self, configuration: Mapping[str, Any] | Run | None = None) -> str:
        """The folder of a configuration's sweep (worker reports, best.yaml, trials); seeds share it."""
        if isinstance(configuration, Run):
            configuration = configuration.configuration
        v = configuration or WILDCARDS
        return f"{self.results}/sweeps/{v['dataset']}/{v['modality']}/{v['arch']}/{v['regimen']}/f{v['fraction']}"

    def sweep_file(self, name: str, configuration: Mapping[str, Any] | Run | None = None) -> str:
        """A file of a configuration's sweep, e.g. ``best.yaml``, ``trials.csv``, ``worker0.json``."""
        return f"{self.sweep_dir(configuration)}/{name}"

    def sweep_summary(self) -> str:
        return f"{self.results}/sweeps/summary.csv"

    def model_dir(self, run: Run | None = None) -> str:
        """A run exported for brokers (model.onnx, model_card.md, reference.parquet); the pattern without a run."""
        return self._cell_dir("models", run)

    def model_file(self, name: str, run: Run | None = None) -> str:
        return f"{self.model_dir(run)}/{name}"

    def best_model_file(self, name: str) -> str:
        """The export of the study's best multi-modal run (and ``run.json`` naming it)."""
        return f"{self.results}/models/best/{name}"

    def embeddings_dir(self, dataset: str = "{dataset}", arch: str = "{arch}", regimen: str = "{regimen}") -> str:
        """The folder of a run's test-split embeddings and their UMAP."""
        return f"{self.results}/embeddings/{dataset}/{arch}/{regimen}"

    def embeddings_file(
        self, name: str, dataset: str = "{dataset}", arch: str = "{arch}", regimen: str = "{regimen}"
    ) -> str:
        """``embeddings.parquet`` or ``umap.parquet`` of a run."""
        return f"{self.embeddings_dir(dataset, arch, regimen)}/{name}"

    # -- weights and corpora ------------------------------------------------------------------------
    def weights_dir(self, regimen: str = "{regimen}", arch: str = "{arch}") -> str:
        """Where the weights a (regimen, arch) starts from are materialised; training reads only this folder."""
        return f"{self.resources}/weights/{regimen}/{arch}"

    def corpus_dir(self, regimen: str = "{regimen}") -> str:
        """The synthetic image corpus a pre-training regimen writes."""
        return f"{self.resources}/corpora/{regimen}"

    # -- tables, figures, reports -------------------------------------------------------------------
    def resolved_config(self) -> str:
        return f"{self.results}/config.yaml"

    def table(self, name: str) -> str:
        """A results table, e.g. ``roc_auc.csv``, ``f1.csv``, ``completeness_peak_mag.csv``."""
        return f"{self.results}/tables/{name}"

    def figure(self, number: int) -> str:
        return f"{self.results}/figure{number}.pdf"

    def table2_json(self, arch: str = "{arch}") -> str:
        """One architecture's Table 2 measurements."""
        return f"{self.results}/table2/{arch}.json"

    def table2_file(self, suffix: str) -> str:
        """Table 2 as ``csv``, ``md`` or ``tex``."""
        return f"{self.results}/table2.{suffix}"

    def outliers_dir(self) -> str:
        return f"{self.results}/outliers"

    def outliers_file(self, name: str) -> str:
        """``outliers.csv``, ``index.html`` or the ``img`` folder of the outlier report."""
        return f"{self.outliers_dir()}/{name}"

    def job_benchmark(self, rule: str, pattern: str) -> str:
        """Snakemake's benchmark file of a job of ``rule`` (``pattern``: its wildcards as a relative path)."""
        return f"{self.results}/benchmarks/{rule}/{pattern}.tsv"


#: The layout of a study run from the repository root, as Snakemake and the CLI's defaults use it.
LAYOUT = Layout()


#: The architecture name of the metadata-only model (no image backbone).
METADATA_ONLY = "none"
MULTIMODAL = "multimodal"
#: Multi-modal models train on ZTF alerts only (requiring Legacy Survey coverage would cost completeness).
MULTIMODAL_DATASET = "ztf"
#: The datasets of Figure 2 (the paper's rows) and of the transfer experiment (Figure 5: a new survey).
FIGURE2_DATASETS = ("ztf", "ls")
TRANSFER_DATASETS = ("lsst",)


def pretrain_archs(config: Mapping[str, Any], regimen: str) -> list[str]:
    """The architectures a regimen's ``pretrain`` block pre-trains (none for published weights)."""
    block = config["regimens"][regimen].get("pretrain")
    if block is None:
        return []
    named = block.get("archs")
    return [a for a in _grid_timm_archs(config) if named is None or a in named]


def _grid_timm_archs(config: Mapping[str, Any]) -> list[str]:
    """The grid's timm architectures: those a regimen's weights can start (the CNN trains from scratch)."""
    return [a for a in config["grid"]["archs"] if config["archs"][a]["kind"] == "timm"]


def pretrain_regimens(config: Mapping[str, Any]) -> list[str]:
    """The regimens whose weights the pipeline pre-trains itself."""
    return [r for r, spec in config["regimens"].items() if spec.get("pretrain") is not None]


def transfer_archs(config: Mapping[str, Any], regimen: str) -> list[str]:
    """The architectures a regimen's ``transfer`` block takes from a model trained in this study (the grid's
    timm architectures; none for other regimens)."""
    if config["regimens"][regimen].get("transfer") is None:
        return []
    return _grid_timm_archs(config)


def transfer_regimens(config: Mapping[str, Any]) -> list[str]:
    """The regimens whose weights are the encoder of a run of this study on another dataset."""
    return [r for r, spec in config["regimens"].items() if spec.get("transfer") is not None]


def made_here(config: Mapping[str, Any], regimen: str, arch: str) -> bool:
    """Whether the pipeline makes a regimen's weights for ``arch`` itself (pre-trained or transferred)."""
    return arch in pretrain_archs(config, regimen) or arch in transfer_archs(config, regimen)


def regimen_applies(config: Mapping[str, Any], regimen: str, arch: str, dataset: str | None = None) -> bool:
    """Whether ``arch`` is trained under ``regimen`` (on ``dataset``, when given): always for 'none', else if
    its weights list it, its ``pretrain`` block pre-trains it or, on a dataset its ``transfer`` block names
    (``transfer.to``), the transfer takes it."""
    if regimen == "none":
        return True
    transfer = config["regimens"][regimen].get("transfer")
    if transfer is not None:
        return arch in transfer_archs(config, regimen) and (dataset is None or dataset in transfer["to"])
    return arch in config["regimens"][regimen]["weights"] or arch in pretrain_archs(config, regimen)


def corpus_folder(config: Mapping[str, Any], regimen: str) -> str:
    """The image corpus a pre-training regimen uses: a user folder, or the synthetic one the pipeline writes."""
    corpus = config["regimens"][regimen]["pretrain"]["corpus"]
    if corpus["source"] == "folder":
        return str(corpus["path"])
    return LAYOUT.corpus_dir(regimen)


def grid_cells(config: Mapping[str, Any], modality: str | None = None) -> Iterator[dict[str, Any]]:
    """Every training run of the grid as wildcard values (dataset, modality, arch, regimen, fraction, seed),
    or those of one modality. Multi-modal runs: ZTF only, ``multimodal.archs`` / ``.regimens`` (default the
    grid's) and, with ``multimodal.metadata_only``, the metadata-only model (arch ``none``, regimen none)."""
    g, mm = config["grid"], config.get("multimodal", {})
    for m in g["modalities"]:
        if modality is not None and m != modality:
            continue
        datasets, archs, regimens = g["datasets"], list(g["archs"]), g["regimens"]
        if m == MULTIMODAL:
            datasets = [MULTIMODAL_DATASET]
            archs = list(mm.get("archs") or archs) + ([METADATA_ONLY] if mm.get("metadata_only", True) else [])
            regimens = mm.get("regimens") or regimens
        for dataset in datasets:
            for arch in archs:
                for regimen in regimens:
                    if not regimen_applies(config, regimen, arch, dataset):
                        continue
                    for fraction in g["fractions"]:
                        for seed in g["seeds"]:
                            yield dict(
                                dataset=dataset,
                                modality=m,
                                arch=arch,
                                regimen=regimen,
                                fraction=format_fraction(fraction),
                                seed=seed,
                            )


def format_fraction(fraction: float) -> str:
    """A fraction as it appears in paths: 5 -> '5', 2.5 -> '2.5' (six significant digits)."""
    return f"{float(fraction):g}"


def study_name(dataset: str, modality: str, arch: str, regimen: str, fraction: Any, prefix: str = "alertvision") -> str:
    """The Optuna study of one configuration (the name its sweep workers open), e.g.
    ``alertvision/ztf/image/cnn/none/f100``."""
    return "/".join([prefix, dataset, modality, arch, regimen, f"f{format_fraction(fraction)}"])


def parse_study_name(name: str) -> dict[str, str]:
    """The configuration a :func:`study_name` encodes (fraction as in paths, e.g. '100')."""
    *_, dataset, modality, arch, regimen, fraction = name.split("/")
    return {
        "dataset": dataset,
        "modality": modality,
        "arch": arch,
        "regimen": regimen,
        "fraction": fraction.removeprefix("f"),
    }


def weight_id(config: Mapping[str, Any], regimen: str, arch: str) -> str | None:
    """The weight id a (regimen, arch) cell starts from; None for random init. A pre-trained or transferred
    regimen's id is ``local-dir:`` of the folder its rule (``pretrain``, ``transfer_weights``) writes."""
    if regimen == "none":
        return None
    if made_here(config, regimen, arch):
        return f"local-dir:{LAYOUT.weights_dir(regimen, arch)}"
    return config["regimens"][regimen]["weights"].get(arch)


def grid_runs(
    config: Mapping[str, Any], modality: str | None = None, datasets: Iterable[str] | None = None
) -> Iterator[Run]:
    """Every training run of the grid, or those of one modality (and of ``datasets``), in the config's order."""
    wanted = None if datasets is None else set(datasets)
    for cell in grid_cells(config, modality):
        if wanted is None or cell["dataset"] in wanted:
            yield Run.from_values(cell)


def transfer_candidates(config: Mapping[str, Any], regimen: str, arch: str) -> list[Run]:
    """The runs a transfer regimen chooses its ``arch`` weights from (on their validation split): the grid's
    image runs of ``arch`` on ``transfer.from`` at ``transfer.fraction`` (null: the grid's largest), of
    ``transfer.regimens`` (null: every other regimen the grid trains ``arch`` with there), every seed."""
    block = config["regimens"][regimen]["transfer"]
    grid = config["grid"]
    fraction = block.get("fraction")
    fraction = format_fraction(max(float(f) for f in grid["fractions"]) if fraction is None else fraction)
    source = block["from"]
    named = block.get("regimens")
    regimens = [
        r
        for r in (named if named is not None else grid["regimens"])
        if config["regimens"][r].get("transfer") is None and regimen_applies(config, r, arch, source)
    ]
    return [Run(source, "image", arch, r, fraction, int(seed)) for r in regimens for seed in grid["seeds"]]


def largest_run(config: Mapping[str, Any], arch: str, regimen: str, dataset: str, modality: str = "image") -> Run:
    """The run Table 2 and Figure 4 use for (arch, regimen): the grid's largest fraction, its first seed."""
    grid = config["grid"]
    fraction = format_fraction(max(float(f) for f in grid["fractions"]))
    return Run(dataset, modality, arch, regimen, fraction, int(grid["seeds"][0]))
