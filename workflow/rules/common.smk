# Input functions shared by the rules. Every path comes from the study plan (alertvision.study.plan).
import re

from alertvision.config import masked_config
from alertvision.data import DATASET_FILES
from alertvision.data.fingerprint import update_fingerprint
from alertvision.data.sources import source_input_files
from alertvision.study.embedplan import run_of
from alertvision.study.jobs import figure3_policies, is_swept, sweep_job, sweep_params, train_job, training_params
from alertvision.study.plan import (
    FIGURE2_DATASETS,
    LAYOUT,
    RUN_FILES,
    TRANSFER_DATASETS,
    Run,
    corpus_folder,
    format_fraction,
    grid_runs,
    pretrain_regimens,
    study_name,
    transfer_candidates,
    transfer_regimens,
    weight_id,
)

ENV = "../envs/alertvision.yaml"


wildcard_constraints:
    dataset="ztf|lsst|ls",
    modality="image|multimodal",
    arch="[A-Za-z0-9_-]+",
    regimen="[A-Za-z0-9_-]+",
    fraction="[0-9]+(\.[0-9]+)?",
    seed="[0-9]+",


def dataset_files(dataset):
    return {f.split(".")[0]: LAYOUT.dataset_file(f, dataset) for f in DATASET_FILES}


def fingerprinted_inputs(dataset):
    """Every file the source of an alert dataset (ztf or lsst) reads, each one an input, and their fingerprint
    (none for synthetic data).

    Files, not folders: Snakemake sees only a folder's own timestamp, so a file edited in place, added
    in a subfolder or removed would rerun nothing. The fingerprint, rewritten only when a file's name,
    size or content changes, catches a file replaced by one with an older modification time
    (`cp -p`, `rsync -a`, `tar x`), which is not newer than the dataset. Only files that exist are
    listed: a missing one is reported by the ingest job itself, naming the config key and where to get
    the data, and a dry run still shows the whole DAG.
    """
    files = source_input_files(config, dataset)
    if not files:
        return []

    def say(n_files, n_bytes):
        logger.info(
            f"reading {n_files} new or changed {dataset} ingest input file(s), {n_bytes / 1e9:.2f} GB, to digest them"
        )

    update_fingerprint(files, LAYOUT.inputs_fingerprint(dataset), before_hashing=say)
    return [LAYOUT.inputs_fingerprint(dataset), *files]


def ingest_inputs(wildcards):
    """What the ZTF ingest reads (see fingerprinted_inputs)."""
    return fingerprinted_inputs("ztf")


def lsst_ingest_inputs(wildcards):
    """What the Rubin/LSST ingest reads: data.lsst.avro's packets and labels (see fingerprinted_inputs)."""
    return fingerprinted_inputs("lsst")


def data_params():
    """What the ZTF ingest reads: the data block of the chosen source only, so that another source's settings
    rerun nothing (the synthetic Rubin sky's, data.synthetic.lsst, among them); the alert cuts and the
    masked-pixel rule too where the source applies them (the release comes cut and normalised). Nothing of
    data.lsst: the lsst dataset is ingest_lsst's."""
    source = config["data"]["source"]
    block = config["data"][source]
    if source == "synthetic":
        block = {k: v for k, v in block.items() if k != "lsst"}
    params = {"source": source, source: block}
    if source != "release":
        params["cuts"] = config["data"]["cuts"]
        params["masked_pixels"] = config["data"]["masked_pixels"]
    return params


def lsst_data_params():
    """What the Rubin/LSST ingest reads: data.lsst (its source, data.lsst.avro, the plugin's settings) and, for
    the synthetic Rubin sky, data.synthetic (the simulated sources it shares with ZTF and data.synthetic.lsst).
    Nothing of the ZTF source, cuts or masked-pixel rule: a ZTF setting reruns nothing of LSST's."""
    block = config["data"]["lsst"]
    params = {"lsst": block}
    if block["source"] == "synthetic":
        params["synthetic"] = config["data"]["synthetic"]
    return params


def sweep_workers(wildcards):
    n = sweep_params(config, wildcards.arch, modality=wildcards.modality)["workers"]
    return [LAYOUT.sweep_file(f"worker{w}.json", wildcards) for w in range(n)]


def study_of(wildcards):
    return study_name(
        wildcards.dataset,
        wildcards.modality,
        wildcards.arch,
        wildcards.regimen,
        wildcards.fraction,
        prefix=sweep_params(config, wildcards.arch)["study_prefix"],
    )


def swept_configurations():
    """The best.yaml of every swept (dataset, modality, arch, regimen, fraction) of the grid."""
    return sorted(
        {LAYOUT.sweep_file("best.yaml", run) for run in grid_runs(config) if is_swept(config, run.arch, run.modality)}
    )


def grid_seed_files(names):
    """The run files ``names`` of every grid seed of a cell, the cell's other wildcards left open."""
    return [
        expand(LAYOUT.run_file(name), seed=seed, allow_missing=True)[0]
        for seed in config["grid"]["seeds"]
        for name in names
    ]


def grid_files(filename, modality, datasets=None):
    """`filename` of every run of one modality (on `datasets`) of the grid, e.g. the image models' metrics.json."""
    return [LAYOUT.run_file(filename, run) for run in grid_runs(config, modality, datasets)]


def transfer_in_grid():
    """Whether the grid trains image models on a transfer dataset (Figure 5)."""
    return any(grid_runs(config, "image", TRANSFER_DATASETS))


def policy_exclusions(wildcards):
    """The exclusion list of the trigger policies, when the config names one (a changed list re-scores them)."""
    path = config["policies"]["exclude_sources"]
    return {"exclude": path} if path else {}


# what an export reads of the config (not export.runs: listing one more run re-exports none)
EXPORT_SETTINGS = {
    key: config["export"][key] for key in ("n_reference", "calibration", "target_purity", "target_completeness")
}


def export_inputs(wildcards):
    """A run's files, its dataset and split table: what an export reads."""
    run = Run.from_values(wildcards)
    files = {
        name.split(".")[0]: LAYOUT.run_file(name, run) for name in ("model.pt", "metrics.json", "predictions.parquet")
    }
    return {**files, **dataset_files(run.dataset), "split": LAYOUT.split_file(run.dataset, run.fraction)}


def multimodal_split_files():
    return sorted({LAYOUT.split_file(run.dataset, run.fraction) for run in grid_runs(config, "multimodal")})


def export_targets():
    """The exported models `all` makes: the best multi-modal run's and each of export.runs."""
    targets = []
    if config["export"]["best_multimodal"] and "multimodal" in config["grid"]["modalities"]:
        targets += [LAYOUT.best_model_file(name) for name in ("model.onnx", "model_card.md", "reference.parquet")]
    for entry in config["export"]["runs"]:
        run = Run.from_values({**entry, "fraction": format_fraction(entry["fraction"])})
        targets += [LAYOUT.model_file(name, run) for name in ("model.onnx", "model_card.md", "reference.parquet")]
    return targets


def all_targets():
    """The resolved config; Figure 2 and its table (image models), Figure 3 and its table (multi-modal models)
    when the grid has them; Table 2, Figure 4 and the outlier report when enabled."""
    targets = [LAYOUT.resolved_config()]
    if "image" in config["grid"]["modalities"]:
        targets += [LAYOUT.figure(2), LAYOUT.table("roc_auc.csv")]
    if transfer_in_grid():
        targets += [LAYOUT.figure(5), LAYOUT.table("transfer_roc_auc.csv")]
    if "multimodal" in config["grid"]["modalities"]:
        targets += [LAYOUT.figure(3), LAYOUT.table("f1.csv")]
    if config["benchmark"]["enabled"]:
        targets += [LAYOUT.table2_file(suffix) for suffix in ("csv", "md", "tex")]
    if swept_configurations():
        targets += [LAYOUT.sweep_summary()]
    if config["embed"]["enabled"]:
        targets += [LAYOUT.figure(4), LAYOUT.outliers_file("outliers.csv"), LAYOUT.outliers_file("index.html")]
    return targets + export_targets()


def benchmark_inputs(wildcards):
    """What Table 2 measures: the ZTF run of regimen 'none' at the largest fraction and first seed, and its dataset."""
    return {"model": run_of(config, wildcards.arch, "none", dataset="ztf").model_path, **dataset_files("ztf")}


def regimens_pattern(kind):
    """A regex of the regimens whose weights are fetched (``published``), pre-trained here (``pretrain``) or
    the encoder of a run of this study (``transfer``)."""
    made = {"pretrain": set(pretrain_regimens(config)), "transfer": set(transfer_regimens(config))}
    here = made["pretrain"] | made["transfer"]
    names = [r for r in config["regimens"] if r != "none" and (r in made[kind] if kind in made else r not in here)]
    return "|".join(re.escape(n) for n in names) or "(?!)"


def transfer_inputs(wildcards):
    """The metrics and model of every run a transfer regimen chooses its weights from."""
    runs = transfer_candidates(config, wildcards.regimen, wildcards.arch)
    return {
        "metrics": [LAYOUT.run_file("metrics.json", run) for run in runs],
        "models": [LAYOUT.run_file("model.pt", run) for run in runs],
    }


def pretrain_corpus(wildcards):
    return corpus_folder(config, wildcards.regimen)
