# Input functions and path helpers shared by the rules.
from alertvision.config import (corpus_folder, figure3_policies, format_fraction, grid_cells, masked_config, model_spec,
                                pretrain_regimens, sweep_params, training_params, weight_id, weights_folder)

ENV = "../../envs/alertvision.yaml"
DATASET_FILES = ("alerts.parquet", "images.npy", "manifest.json")


wildcard_constraints:
    dataset="ztf|ls",
    modality="image|multimodal",
    arch="[A-Za-z0-9_-]+",
    regimen="[A-Za-z0-9_-]+",
    fraction="[0-9]+(\.[0-9]+)?",
    seed="[0-9]+",


def dataset_files(dataset):
    return {f.split(".")[0]: f"results/data/{dataset}/{f}" for f in DATASET_FILES}


def ingest_inputs(wildcards):
    """Every file the ZTF source reads, each one an input (none for synthetic data).

    Files, not folders: Snakemake sees only a folder's own timestamp, so a file edited in place, added
    in a subfolder or removed would rerun nothing. Only files that exist are listed: a missing one is
    reported by the ingest job itself, naming the config key and where to get the data, and a dry run
    still shows the whole DAG.
    """
    from alertvision.sources import source_input_files

    return source_input_files(config)


def data_params():
    """The data block of the chosen source only, so that another source's settings rerun nothing."""
    source = config["data"]["source"]
    return {"source": source, source: config["data"][source]}


def train_inputs(wildcards):
    """The dataset, the split table and, for a pretrained regimen, the resolved weights record."""
    inputs = dataset_files(wildcards.dataset)
    inputs["split"] = f"results/splits/{wildcards.dataset}/f{wildcards.fraction}.parquet"
    if weight_id(config, wildcards.regimen, wildcards.arch) is not None:
        inputs["weights"] = weights_folder(wildcards.regimen, wildcards.arch)
    return inputs


SWEEP_DIR = "results/sweeps/{dataset}/{modality}/{arch}/{regimen}/f{fraction}"


def sweeps_on(arch):
    return sweep_params(config, arch)["trials"] > 0


def seed_run_inputs(wildcards):
    """A seed run's inputs: the training inputs and, when its architecture is swept, the sweep's best.yaml."""
    inputs = train_inputs(wildcards)
    if sweeps_on(wildcards.arch):
        inputs["best"] = f"{SWEEP_DIR.format(**wildcards)}/best.yaml"
    return inputs


def sweep_workers(wildcards):
    n = sweep_params(config, wildcards.arch)["workers"]
    return [f"{SWEEP_DIR.format(**wildcards)}/worker{w}.json" for w in range(n)]


def study_of(wildcards):
    from alertvision.sweeps.storage import study_name

    return study_name(wildcards.dataset, wildcards.modality, wildcards.arch, wildcards.regimen, wildcards.fraction,
                      prefix=sweep_params(config, wildcards.arch)["study_prefix"])


def swept_configurations():
    """The best.yaml of every swept (dataset, modality, arch, regimen, fraction) of the grid."""
    cells = [c for c in grid_cells(config) if sweeps_on(c["arch"])]
    return sorted({f"{SWEEP_DIR.format(**c)}/best.yaml" for c in cells})


def run_info(wildcards):
    return dict(dataset=wildcards.dataset, modality=wildcards.modality, arch=wildcards.arch,
                regimen=wildcards.regimen, fraction=wildcards.fraction, seed=int(wildcards.seed))


def grid_runs(filename, modality):
    """`filename` of every run of one modality of the grid, e.g. all metrics.json files of the image models."""
    return [
        "results/runs/{dataset}/{modality}/{arch}/{regimen}/f{fraction}/s{seed}/{filename}".format(filename=filename, **cell)
        for cell in grid_cells(config, modality)
    ]


def policy_exclusions(wildcards):
    """The exclusion list of the trigger policies, when the config names one (a changed list re-scores them)."""
    path = config["policies"]["exclude_sources"]
    return {"exclude": path} if path else {}


def all_targets():
    """The resolved config; Figure 2 and its table (image models), Figure 3 and its table (multi-modal models)
    when the grid has them; Table 2, Figure 4 and the outlier report when enabled."""
    targets = ["results/config.yaml"]
    if "image" in config["grid"]["modalities"]:
        targets += ["results/figure2.pdf", "results/tables/roc_auc.csv"]
    if "multimodal" in config["grid"]["modalities"]:
        targets += ["results/figure3.pdf", "results/tables/f1.csv"]
    if config["benchmark"]["enabled"]:
        targets += ["results/table2.csv", "results/table2.md", "results/table2.tex"]
    if swept_configurations():
        targets += ["results/sweeps/summary.csv"]
    if config["embed"]["enabled"]:
        targets += ["results/figure4.pdf", "results/outliers/outliers.csv", "results/outliers/index.html"]
    return targets


def benchmark_inputs(wildcards):
    """What Table 2 measures: the ZTF run of regimen 'none' at the largest fraction and first seed, and its dataset."""
    from alertvision.embedplan import run_of

    return {"model": run_of(config, wildcards.arch, "none", dataset="ztf").model_path, **dataset_files("ztf")}


def regimens_pattern(published):
    """A regex of the regimens whose weights are fetched (published) or pre-trained here (not published)."""
    import re

    mine = set(pretrain_regimens(config))
    names = [r for r in config["regimens"] if r != "none" and (r in mine) != published]
    return "|".join(re.escape(n) for n in names) or "(?!)"


def pretrain_corpus(wildcards):
    return corpus_folder(config, wildcards.regimen)
