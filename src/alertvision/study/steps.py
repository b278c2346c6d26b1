"""One function per pipeline step: the front door. Every Snakemake script and every CLI command calls these."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import pandas as pd
import yaml

from alertvision.atomic import write_parquet, write_text
from alertvision.config import masked_config
from alertvision.data.contract import ALERTS_FILE
from alertvision.data.ingest import kowalski
from alertvision.data.sources import ingest_ls
from alertvision.data.sources import ingest_lsst as ingest_rubin
from alertvision.data.sources import ingest_ztf as ingest
from alertvision.data.splits import check_eval_classes, split_table
from alertvision.evaluation.aggregate import write_f1_tables, write_roc_auc_table
from alertvision.settings import ModelSpec
from alertvision.study.jobs import TrainJob
from alertvision.study.plan import LAYOUT, Run

if TYPE_CHECKING:
    from alertvision.models.weights import ResolvedWeights

log = logging.getLogger(__name__)


def write_resolved_config(config: Mapping[str, Any], out: str | os.PathLike) -> None:
    """Write the study config as resolved (every default filled in; storage passwords masked) as YAML."""

    write_text(
        out,
        "# The study config as run: every default filled in, storage passwords masked.\n"
        + yaml.safe_dump(masked_config(config), sort_keys=False),
    )
    log.info("wrote the resolved config to %s", out)


def ingest_ztf(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Write the ZTF dataset of ``data.source`` (alerts.parquet, images.npy, manifest.json); returns its manifest."""
    return ingest(config, out_dir, progress=progress)


def ingest_lsst(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Write the Rubin/LSST dataset of ``data.lsst.source`` (alerts.parquet, images.npy, manifest.json); returns
    its manifest."""
    return ingest_rubin(config, out_dir, progress=progress)


def fetch_kowalski(config: Mapping[str, Any], progress: bool = True) -> Any:
    """Fill ``data.kowalski.cache_dir`` from Fritz and Kowalski without building the dataset; returns what
    was fetched (labels, cache folder, statistics)."""
    return kowalski.fetch_kowalski(config, progress=progress)


def ls_dataset(
    config: Mapping[str, Any], ztf_dir: str | os.PathLike, out_dir: str | os.PathLike, progress: bool = True
) -> dict:
    """Write the Legacy Survey dataset paired with the alerts of ``ztf_dir``; returns its manifest."""
    return ingest_ls(config, ztf_dir, out_dir, progress=progress)


def split(
    dataset_dir: str | os.PathLike, fraction: float, splits_cfg: Mapping[str, Any], out: str | os.PathLike
) -> pd.DataFrame:
    """Write the split table of one training fraction (alert_id, row, split)."""
    alerts = pd.read_parquet(
        Path(dataset_dir) / ALERTS_FILE, columns=["alert_id", "objectId", "jd", "label", "source_set", "split"]
    )
    table = split_table(alerts, float(fraction), splits_cfg)
    check_eval_classes(table, alerts["label"].to_numpy(), f"{dataset_dir} at {fraction}%")
    write_parquet(out, table)
    counts = table["split"].value_counts().to_dict()
    log.info("fraction %s%%: %s alerts per split", fraction, counts)
    return table


def fetch_weights(weight_id: str, weights_cfg: Mapping[str, Any], out_folder: str | os.PathLike) -> dict:
    """Materialise a weight id into ``out_folder`` (config.json + model.safetensors + source.json)."""
    from alertvision.models.fetch import fetch_weights as fetch  # deferred: torch is heavy

    record = fetch(
        weight_id,
        out_folder,
        local_dirs=weights_cfg.get("local_dirs"),
        cache_dir=weights_cfg.get("cache_dir"),
        endpoint=weights_cfg.get("endpoint"),
    )
    log.info("weights %s -> %s: %s", weight_id, out_folder, json.dumps(record, default=str))
    return record


def galaxy_corpus(corpus_cfg: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Write the SYNTHETIC galaxy corpus of a pre-training regimen (images, vote counts, manifest)."""
    from alertvision.synthetic.galaxies import write_galaxy_corpus  # deferred: scipy is heavy

    manifest = write_galaxy_corpus(
        out_dir, int(corpus_cfg["n_images"]), int(corpus_cfg["size"]), int(corpus_cfg["seed"]), progress=progress
    )
    log.info("SYNTHETIC galaxy corpus: %d images of %d px in %s", manifest["n_images"], manifest["size"], out_dir)
    return manifest


def pretrain(
    corpus_dir: str | os.PathLike,
    out_folder: str | os.PathLike,
    *,
    arch_block: Mapping[str, Any],
    pretrain_cfg: Mapping[str, Any],
    threads: int | None = None,
    progress: bool = True,
    checkpoints: Mapping[str, Any] | None = None,
) -> dict:
    """Pre-train the encoder of a timm architecture on an image corpus and write it in timm's local-dir layout
    (resuming from a checkpoint as the ``checkpoints`` config block says)."""
    from alertvision.training.pretrain import pretrain_encoder  # deferred: torch is heavy

    spec = ModelSpec.from_arch_block(arch_block)
    if spec.kind != "timm":
        raise ValueError(f"only timm architectures are pre-trained, not kind {spec.kind!r}")
    keys = ("epochs", "batch_size", "lr", "weight_decay", "loss", "seed", "device")
    args = _checkpoint_args(checkpoints)
    with _stop_signals_for_job(args):
        return pretrain_encoder(
            corpus_dir,
            out_folder,
            timm_name=spec.timm_name,
            input_size=spec.image_size,
            threads=threads or pretrain_cfg.get("threads"),
            progress=progress,
            **args,
            **{k: pretrain_cfg[k] for k in keys},
        )


def transfer_weights(
    metric_files: Iterable[str | os.PathLike], out_folder: str | os.PathLike, *, weight_id: str
) -> dict:
    """Write a transfer regimen's weights: the encoder of the run of ``metric_files`` with the best validation
    ROC AUC, as a timm local-dir folder with its provenance in source.json."""
    from alertvision.training.transfer import write_transfer_weights  # deferred: torch is heavy

    return write_transfer_weights(list(metric_files), out_folder, weight_id=weight_id)


def weights_from_folder(folder: str | os.PathLike | None, weight_id: str | None) -> "ResolvedWeights | None":
    """The weights materialised in ``folder`` (by fetch_weights or pretrain), recorded under ``weight_id``
    (default: ``local-dir:`` of the folder); None without a folder (random init)."""
    if folder is None:
        return None
    weight_id = weight_id or f"local-dir:{folder}"
    from alertvision.models.fetch import SOURCE_FILE, fetched_weights  # deferred: torch is heavy
    from alertvision.models.weights import ResolvedWeights, check_folder  # deferred: torch is heavy

    folder = Path(folder).resolve()
    if (folder / SOURCE_FILE).is_file():
        return fetched_weights(folder)
    return ResolvedWeights(weight_id, str(folder), check_folder(folder, weight_id), "pretrained here")


def sweep_worker(
    job: "TrainJob | Mapping[str, Any]",
    report_json: str | os.PathLike,
    *,
    sweep_cfg: Mapping[str, Any],
    study_name: str,
    threads: int | None = None,
    progress: bool = True,
) -> dict:
    """Run trials of one configuration's study (shared with its other workers) until it has enough: the
    trials vary ``job`` (a :class:`~alertvision.study.jobs.TrainJob` or its ``params()``)."""
    from alertvision.sweeps import sweep_run  # deferred: torch is heavy

    job = _job(job, threads)
    return sweep_run(
        job,
        Path(report_json).parent,
        sweep_cfg=sweep_cfg,
        study_name=study_name,
        weights=weights_from_folder(job.weights_dir, job.weight_id),
        progress=progress,
        worker_report=report_json,
    )


def sweep_finalize(
    sweep_dir: str | os.PathLike,
    job: "TrainJob | Mapping[str, Any]",
    *,
    study_name: str,
    sweep_cfg: Mapping[str, Any],
) -> dict:
    """Write best.yaml, trials.csv and trials.png of a configuration (``job``'s) whose workers are done;
    returns best.yaml."""
    from alertvision.sweeps import sweep_finalize as finalize  # deferred: torch is heavy

    folder, job = Path(sweep_dir), _job(job)
    return finalize(
        folder,
        study_name=study_name,
        training=job.training,
        sweep_cfg=sweep_cfg,
        best_yaml=folder / "best.yaml",
        trials_csv=folder / "trials.csv",
        plot=folder / "trials.png",
        modality=job.run.modality,
        model=job.model,
    )


def _job(job: "TrainJob | Mapping[str, Any]", threads: int | None = None) -> TrainJob:
    """A job given whole or as a Snakemake rule's ``params()``; ``threads`` over the training block's."""
    if not isinstance(job, TrainJob):
        job = TrainJob.from_params(job)
    if threads is not None:
        job = dataclasses.replace(job, training={**dict(job.training), "threads": int(threads)})
    return job


def sweep_summary(best_yamls: Iterable[str | os.PathLike], out_csv: str | os.PathLike) -> pd.DataFrame:
    """Gather the studies' best.yaml files into one table."""
    from alertvision.sweeps import write_summary  # deferred: torch is heavy

    return write_summary(best_yamls, out_csv)


def train(
    job: "TrainJob | Mapping[str, Any]",
    *,
    threads: int | None = None,
    seeds: Sequence[int] | None = None,
    progress: bool = True,
    checkpoints: Mapping[str, Any] | None = None,
) -> dict:
    """Train a job (a :class:`~alertvision.study.jobs.TrainJob`, or its ``params()`` as a Snakemake rule
    holds them), from the weights in its weights folder (written by fetch_weights or pretrain), with its
    sweep's best hyperparameters over the configured ones when its configuration is swept, resuming from a
    checkpoint as the ``checkpoints`` config block says. ``threads`` overrides the training block's;
    ``seeds``: one run per seed, each in its own run folder, in one process. Returns the (last) metrics."""
    from alertvision.training.loop import train_run  # deferred: torch is heavy

    job = _job(job, threads)
    if job.best_yaml is not None:
        from alertvision.sweeps import load_best_params  # deferred: torch is heavy

        best = load_best_params(job.best_yaml)
        job = job.with_hyperparameters(best)
        log.info("hyperparameters from %s: %s", job.best_yaml, best)
    weights = weights_from_folder(job.weights_dir, job.weight_id)
    args = _checkpoint_args(checkpoints)
    min_epoch_s = (checkpoints or {}).get("min_epoch_seconds")
    metrics: dict = {}
    for seed in [job.seed] if seeds is None else seeds:
        with _stop_signals_for_job(args):
            metrics = train_run(
                job if seeds is None else job.for_seed(seed),
                weights=weights,
                progress=progress,
                min_epoch_s=None if min_epoch_s is None else float(min_epoch_s),
                **args,
            )
    return metrics


@contextlib.contextmanager
def _stop_signals_for_job(checkpoint_args: Mapping[str, Any]) -> Iterator[None]:
    """SIGTERM and SIGUSR1 recorded for the whole job when it checkpoints (the training engine stops at its
    next step on them), so that one arriving while the data loads or the outputs are written neither kills
    the process nor loses a finished run."""
    from alertvision.training.engine import stop_signals  # deferred: torch is heavy

    with stop_signals(checkpoint_args.get("checkpoint", True)) as signalled:
        yield
        if signalled:
            log.warning("a stop signal arrived after the last epoch: the outputs were written all the same")


def _checkpoint_args(checkpoints: Mapping[str, Any] | None) -> dict[str, Any]:
    """The validated ``checkpoints`` config block as the training functions take it (None: their defaults)."""
    if checkpoints is None:
        return {}
    every = checkpoints["every_minutes"]
    return {
        "checkpoint": bool(checkpoints["enabled"]),
        "keep_checkpoint": bool(checkpoints["keep"]),
        "checkpoint_every_s": None if every is None else 60.0 * float(every),
    }


def benchmark(
    model: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    out_json: str | os.PathLike,
    *,
    arch: str,
    arch_block: Mapping[str, Any],
    benchmark_cfg: Mapping[str, Any],
    training_cfg: Mapping[str, Any],
) -> dict:
    """Table 2 rows of one architecture: throughput and memory on the test split of ``dataset_dir``."""
    from alertvision.reports.table2 import benchmark_run  # deferred: torch is heavy

    return benchmark_run(
        model,
        dataset_dir,
        out_json,
        arch=arch,
        model_spec=ModelSpec.from_arch_block(arch_block),
        benchmark_cfg=benchmark_cfg,
        training_cfg=training_cfg,
    )


def table2(
    json_files: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    workload: Mapping[str, Any],
    alerts_file: str | os.PathLike,
    splits_cfg: Mapping[str, Any],
) -> pd.DataFrame:
    """Gather benchmark JSON files into table2.csv, .md and .tex, with the compute estimate of ``workload``
    (training alerts counted in ``alerts_file``)."""
    from alertvision.reports.table2 import table2 as gather  # deferred: torch is heavy
    from alertvision.reports.table2.estimate import StudyWorkload  # deferred: torch is heavy

    study = StudyWorkload.from_dataset(workload, alerts_file, splits_cfg)
    out = Path(out_dir)
    return gather(json_files, out / "table2.csv", out / "table2.md", out / "table2.tex", study)


def embed(
    model: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    batch_size: int,
    threads: int | None,
    device: str,
    progress: bool = True,
) -> pd.DataFrame:
    """Penultimate-layer embeddings of a run's test alerts."""
    from alertvision.evaluation.embeddings import embed_run  # deferred: torch is heavy

    return embed_run(model, dataset_dir, out, batch_size=batch_size, threads=threads, device=device, progress=progress)


def umap(embeddings: str | os.PathLike, out: str | os.PathLike, umap_cfg: Mapping[str, Any]) -> pd.DataFrame:
    """The seeded 2-D UMAP of an embeddings table."""
    from alertvision.evaluation.latent import write_umap  # deferred: torch is heavy

    return write_umap(embeddings, out, umap_cfg)


def figure4(
    panels: Mapping[str, str | os.PathLike],
    manifest: str | os.PathLike,
    out_pdf: str | os.PathLike,
    note: str | None = None,
) -> None:
    """Draw Figure 4 from UMAP tables, one panel per title."""
    from alertvision.reports.figure4 import figure4_from_files  # deferred: torch is heavy

    figure4_from_files(panels, manifest, out_pdf, note=note)


def outliers(
    umaps: Mapping[str, str | os.PathLike],
    ztf_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    isolation_forest: Mapping[str, Any],
    *,
    ls_dir: str | os.PathLike | None = None,
    titles: Mapping[str, str] | None = None,
    note: str | None = None,
) -> dict:
    """Isolation-Forest outliers of each model's UMAP: outliers.csv and a page of cards."""
    from alertvision.reports.gallery import build_outlier_report  # deferred: torch is heavy

    return build_outlier_report(umaps, ztf_dir, out_dir, isolation_forest, ls_dir=ls_dir, titles=titles, note=note)


def export(
    run_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    split_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    export_cfg: Mapping[str, Any],
    run_json: Mapping[str, Any] | None = None,
) -> dict:
    """Export a run for brokers: model.onnx (its contract, calibration and thresholds inside), model_card.md,
    reference.parquet, reliability.png (and run.json holding ``run_json`` when given), as one folder written
    whole; ``export_cfg``: the config's ``export`` block."""
    from alertvision.deploy.export import DeploySettings, export_run  # deferred: torch is heavy

    return export_run(
        run_dir,
        dataset_dir,
        split_file,
        out_dir,
        n_reference=int(export_cfg["n_reference"]),
        settings=DeploySettings.from_config(export_cfg),
        run_json=run_json,
    )


def export_best(
    metric_files: Iterable[str | os.PathLike], out_dir: str | os.PathLike, export_cfg: Mapping[str, Any]
) -> dict:
    """Export the run of ``metric_files`` with the highest validation ROC AUC to ``out_dir``, with
    ``run.json`` naming it."""
    from alertvision.deploy.export import best_run  # deferred: torch is heavy

    chosen = best_run(list(metric_files))
    metrics = json.loads(chosen.read_text())
    run = Run.from_values(metrics)
    result = export(
        chosen.parent,
        LAYOUT.dataset_dir(run.dataset),
        LAYOUT.split_file(run.dataset, run.fraction),
        out_dir,
        export_cfg,
        run_json={**run.values(), "val_roc_auc_best": metrics.get("val_roc_auc_best")},
    )
    log.info("exported the best multi-modal run %s to %s", chosen.parent, out_dir)
    return result


def predict(
    inputs: Sequence[str | os.PathLike],
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    threads: int = 1,
    batch_size: int = 256,
    thresholds: str = "policy",
    progress: bool = True,
    survey: str = "ztf",
    schemas: str | os.PathLike | None = None,
    schema_registry: str | None = None,
) -> dict:
    """Score real alert packets (files, folders, tar archives, ``-`` for stdin) with an exported model into
    a Parquet or CSV file (see :mod:`alertvision.deploy.predict`)."""
    from alertvision.deploy.predict import predict as score_packets  # deferred: torch is heavy

    return score_packets(
        inputs,
        model,
        out,
        threads=threads,
        batch_size=batch_size,
        thresholds=thresholds,
        progress=progress,
        survey=survey,
        schemas=schemas,
        schema_registry=schema_registry,
    )


def aggregate(
    metric_files: Iterable[str | os.PathLike], out_csv: str | os.PathLike, bootstrap: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Aggregate runs into ``roc_auc.csv`` (with ``bootstrap``, the config's block: each configuration's
    bootstrap std of the test AUC over test sources, read from the runs' predictions)."""
    return write_roc_auc_table(metric_files, out_csv, dict(bootstrap) if bootstrap is not None else None)


def figure2(table_csv: str | os.PathLike, out_pdf: str | os.PathLike) -> None:
    """Draw Figure 2 from ``roc_auc.csv``."""
    from alertvision.reports.figures import figure2 as draw  # deferred: matplotlib is heavy

    draw(pd.read_csv(table_csv), out_pdf)


def figure5(table_csv: str | os.PathLike, out_pdf: str | os.PathLike) -> None:
    """Draw Figure 5 from ``transfer_roc_auc.csv``: test ROC AUC on the new survey per regimen (transfer
    from ZTF among them) against its training-set size."""
    from alertvision.reports.figures import figure5 as draw  # deferred: matplotlib is heavy

    draw(pd.read_csv(table_csv), out_pdf)


def f1_table(
    metric_files: Iterable[str | os.PathLike],
    out_csv: str | os.PathLike,
    peak_mag_csv: str | os.PathLike | None = None,
    exclude_sources: str | os.PathLike | None = None,
    bootstrap: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Score the runs' trigger policies on their test predictions (the sources of ``exclude_sources`` left
    out) and aggregate them into ``f1.csv`` (and completeness per peak-magnitude bin); with ``bootstrap``
    (the config's block) each run's F1 also gets its bootstrap std over test sources."""
    return write_f1_tables(
        metric_files, out_csv, peak_mag_csv, exclude_sources, dict(bootstrap) if bootstrap is not None else None
    )


def figure3(
    table_csv: str | os.PathLike, out_pdf: str | os.PathLike, policies: str | Sequence[str] | None = None
) -> None:
    """Draw Figure 3 from ``f1.csv``: the F1 of each of ``policies`` (one panel row each; None: all four) for the
    multi-modal models."""
    from alertvision.reports.figures import figure3 as draw  # deferred: matplotlib is heavy

    draw(pd.read_csv(table_csv), out_pdf, policies=policies)
