# Input functions and path helpers shared by the rules.
from alertvision.config import format_fraction, grid_cells, training_params, weight_id

ENV = "../../envs/alertvision.yaml"
DATASET_FILES = ("alerts.parquet", "images.npy", "manifest.json")


wildcard_constraints:
    dataset="ztf|ls",
    modality="image",
    arch="[A-Za-z0-9_-]+",
    regimen="[A-Za-z0-9_-]+",
    fraction="[0-9]+(\.[0-9]+)?",
    seed="[0-9]+",


def dataset_files(dataset):
    return {f.split(".")[0]: f"results/data/{dataset}/{f}" for f in DATASET_FILES}


def ingest_inputs(wildcards):
    """The files a real-data source reads, so that a changed input reruns the ingest (none for synthetic)."""
    source = config["data"]["source"]
    block = config["data"].get(source, {})
    if source == "avro":
        paths = block["path"]
        return ([paths] if isinstance(paths, str) else list(paths)) + [block["labels"]]
    if source == "release":
        return [p for p in (block["path"], block["images_zip"], block["metadata_zip"]) if p]
    if source == "kowalski":
        return [p for p in block["bts"].values() if p]
    return []


def data_params():
    """The data block of the chosen source only, so that another source's settings rerun nothing."""
    source = config["data"]["source"]
    return {"source": source, source: config["data"][source]}


def train_inputs(wildcards):
    """The dataset, the split table and, for a pretrained regimen, the resolved weights record."""
    inputs = dataset_files(wildcards.dataset)
    inputs["split"] = f"results/splits/{wildcards.dataset}/f{wildcards.fraction}.parquet"
    if weight_id(config, wildcards.regimen, wildcards.arch) is not None:
        inputs["weights"] = f"results/weights/{wildcards.regimen}/{wildcards.arch}.json"
    return inputs


def run_info(wildcards):
    return dict(dataset=wildcards.dataset, modality=wildcards.modality, arch=wildcards.arch,
                regimen=wildcards.regimen, fraction=wildcards.fraction, seed=int(wildcards.seed))


def grid_runs(filename):
    """`filename` of every run of the grid, e.g. all metrics.json files."""
    return [
        "results/runs/{dataset}/{modality}/{arch}/{regimen}/f{fraction}/s{seed}/{filename}".format(filename=filename, **cell)
        for cell in grid_cells(config)
    ]


def all_targets():
    """Figure 2 and its table always; Table 2, Figure 4 and the outlier report when enabled."""
    targets = ["results/figure2.pdf", "results/tables/roc_auc.csv"]
    if config["benchmark"]["enabled"]:
        targets += ["results/table2.csv", "results/table2.md", "results/table2.tex"]
    if config["embed"]["enabled"]:
        targets += ["results/figure4.pdf", "results/outliers/outliers.csv", "results/outliers/index.html"]
    return targets


def benchmark_inputs(wildcards):
    """What Table 2 measures: the ZTF run of regimen 'none' at the largest fraction and first seed, and its dataset."""
    from alertvision.embedplan import run_of

    return {"model": run_of(config, wildcards.arch, "none", dataset="ztf").model_path, **dataset_files("ztf")}
