"""``alertvision <step>``: every pipeline step as a command, for use without Snakemake."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from alertvision import __version__
from alertvision.config import ConfigError, format_fraction, load_config, parse_yaml
from alertvision.logs import setup_logging
from alertvision.reports.workload import workload_plan
from alertvision.study.jobs import TrainJob, figure3_policies, sweep_job, sweep_params, train_job, training_params
from alertvision.study.plan import (
    LAYOUT,
    Layout,
    Run,
    corpus_folder,
    largest_run,
    pretrain_archs,
    study_name,
    transfer_archs,
    transfer_candidates,
    transfer_regimens,
    weight_id,
)

log = logging.getLogger("alertvision")


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE (dotted key), got {item!r}")
        out[key] = parse_yaml(value, f"--set {key}")
    return out


def _config(args) -> dict:
    return load_config(args.config, _parse_set(args.set))


def _layout(args) -> Layout:
    return Layout(results=args.results)


def _run(args, seed: int = 0) -> Run:
    """The grid cell named by the command line (``--seed`` where the command has it)."""
    return Run(
        args.dataset,
        args.modality,
        args.arch,
        args.regimen,
        format_fraction(args.fraction),
        getattr(args, "seed", seed),
    )


def _job(args, config: dict, sweep: bool = False) -> TrainJob:
    """The job of the grid cell the command line names, resolved as the Snakemake rules resolve it, with
    the command line's folders (``--results``, ``--dataset-dir``, ``--split``, ``--out-dir``) over the
    study's. Stops when its weights folder is not filled yet, naming the command that fills it."""
    run, layout = _run(args), _layout(args)
    job = (sweep_job if sweep else train_job)(config, run, layout)
    job = dataclasses.replace(
        job,
        dataset_dir=args.dataset_dir or job.dataset_dir,
        split_file=args.split or job.split_file,
        run_dir=getattr(args, "out_dir", None) or job.run_dir,
    )
    if job.weights_dir is not None and not Path(job.weights_dir, "config.json").is_file():
        raise SystemExit(
            f"{job.weights_dir} holds no weights yet: run `alertvision weights --regimen {run.regimen} "
            f"--arch {run.arch}` (or `alertvision pretrain` for a pre-training regimen) first"
        )
    return job


def _sweep_of(args, config: dict) -> dict[str, Any]:
    """What every sweep command of a configuration shares: its folder, study name and sweep block."""
    run = _run(args)
    sweep = sweep_params(config, args.arch, modality=args.modality)
    return dict(
        folder=Path(_layout(args).sweep_dir(run)),
        sweep=sweep,
        study=study_name(run.dataset, run.modality, run.arch, run.regimen, run.fraction, prefix=sweep["study_prefix"]),
    )


def cmd_config(args) -> int:
    print(yaml.safe_dump(_config(args), sort_keys=False))
    return 0


def cmd_ingest(args) -> int:
    from alertvision.study.steps import ingest_ztf  # deferred: pandas is heavy

    _say_dataset(args.out, ingest_ztf(_config(args), args.out, progress=not args.quiet), "alerts")
    return 0


def cmd_ingest_lsst(args) -> int:
    from alertvision.study.steps import ingest_lsst  # deferred: pandas is heavy

    _say_dataset(args.out, ingest_lsst(_config(args), args.out, progress=not args.quiet), "Rubin/LSST alerts")
    return 0


def _say_dataset(out: str, manifest: Mapping[str, Any], what: str) -> None:
    source = "SYNTHETIC" if manifest["synthetic"] else manifest["source"]
    print(f"{out}: {manifest['n_alerts']} {what} of {manifest['n_sources']} sources ({source})")


def cmd_fetch_kowalski(args) -> int:
    from alertvision.study.steps import fetch_kowalski  # deferred: pandas is heavy

    fetched = fetch_kowalski(_config(args), progress=not args.quiet)
    print(f"{fetched.cache_dir}: answers for {len(fetched.labels)} sources cached ({fetched.stats['listed_sources']})")
    return 0


def cmd_ls_dataset(args) -> int:
    from alertvision.study.steps import ls_dataset  # deferred: pandas is heavy

    manifest = ls_dataset(_config(args), args.ztf, args.out, progress=not args.quiet)
    cov = manifest["coverage"]
    print(f"{args.out}: {manifest['n_alerts']} alerts; sources {cov['sources']}")
    return 0


def cmd_split(args) -> int:
    from alertvision.study.steps import split  # deferred: pandas is heavy

    table = split(args.dataset_dir, args.fraction, _config(args)["splits"], args.out)
    print(f"{args.out}: {table['split'].value_counts().to_dict()}")
    return 0


def cmd_weights(args) -> int:
    from alertvision.study.steps import fetch_weights  # deferred: pandas is heavy

    config = _config(args)
    if not args.id and args.arch in pretrain_archs(config, args.regimen):
        raise SystemExit(
            f"regimen {args.regimen!r} pre-trains its weights: run `alertvision pretrain --regimen "
            f"{args.regimen} --arch {args.arch}`"
        )
    wid = args.id or weight_id(config, args.regimen, args.arch)
    if wid is None:
        raise SystemExit(f"regimen {args.regimen!r} has no weights for {args.arch!r} (random init)")
    out = args.out or LAYOUT.weights_dir(args.regimen, args.arch)
    info = fetch_weights(wid, config["weights"], out)
    print(f"{wid}: {info['folder']} ({info['architecture']}, via {info['via']})")
    return 0


def cmd_transfer_weights(args) -> int:
    from alertvision.study.steps import transfer_weights  # deferred: pandas is heavy

    config = _config(args)
    if args.arch not in transfer_archs(config, args.regimen):
        raise SystemExit(
            f"regimen {args.regimen!r} takes no weights for {args.arch!r} from a run of this study (regimens "
            f"with a transfer block: {transfer_regimens(config) or 'none'}; timm architectures of the grid only)"
        )
    layout = _layout(args)
    runs = transfer_candidates(config, args.regimen, args.arch)
    metrics = [layout.run_file("metrics.json", run) for run in runs]
    missing = [m for m in metrics if not Path(m).is_file()]
    if missing:
        raise SystemExit(
            f"the candidate runs are not all trained yet ({len(missing)} missing, e.g. {missing[0]}): "
            "train them first (alertvision train, or snakemake)"
        )
    out = args.out or LAYOUT.weights_dir(args.regimen, args.arch)
    record = transfer_weights(metrics, out, weight_id=weight_id(config, args.regimen, args.arch))
    chosen = record["transfer"]
    print(
        f"{out}: the encoder of {chosen['run']} (val ROC AUC {chosen['val_roc_auc_best']:.4f}, "
        f"best of {len(chosen['candidates'])} runs)"
    )
    return 0


def cmd_galaxy_corpus(args) -> int:
    from alertvision.study.steps import galaxy_corpus  # deferred: pandas is heavy

    config = _config(args)
    block = _pretrain_block(config, args.regimen)
    out = args.out or corpus_folder(config, args.regimen)
    manifest = galaxy_corpus(block["corpus"], out, progress=not args.quiet)
    print(f"{out}: {manifest['n_images']} SYNTHETIC galaxy images of {manifest['size']} px")
    return 0


def _pretrain_block(config: dict, regimen: str) -> dict:
    spec = config["regimens"].get(regimen)
    if spec is None or spec.get("pretrain") is None:
        raise SystemExit(
            f"regimen {regimen!r} has no `pretrain` block in the config "
            f"(pre-training regimens: {[r for r, v in config['regimens'].items() if v.get('pretrain')]})"
        )
    return spec["pretrain"]


def cmd_pretrain(args) -> int:
    from alertvision.study.steps import pretrain  # deferred: pandas is heavy

    config = _config(args)
    block = _pretrain_block(config, args.regimen)
    corpus = args.corpus or corpus_folder(config, args.regimen)
    out = args.out or LAYOUT.weights_dir(args.regimen, args.arch)
    summary = pretrain(
        corpus,
        out,
        arch_block=config["archs"][args.arch],
        pretrain_cfg=block,
        progress=not args.quiet,
        checkpoints=config["checkpoints"],
    )
    print(
        f"{out}: loss {summary['first_train_loss']:.3f} -> {summary['last_train_loss']:.3f} (train), best val "
        f"{summary['best_val_loss']:.3f}"
    )
    return 0


def _with_best(args, job: TrainJob) -> TrainJob:
    """The job with the sweep's best.yaml Snakemake would give it: ``--best``, else the configuration's
    best.yaml when the config sweeps the architecture (stopping when the sweep has not run)."""
    if args.best:
        return dataclasses.replace(job, best_yaml=str(args.best))
    if job.best_yaml is not None and not Path(job.best_yaml).is_file():
        raise SystemExit(
            f"the config sweeps {args.arch!r} (sweep.trials > 0) but {job.best_yaml} does not exist: run "
            f"`alertvision sweep` with the same --dataset/--modality/--arch/--regimen/--fraction first, "
            f"or pass --best FILE"
        )
    return job


def cmd_train(args) -> int:
    from alertvision.study.steps import train  # deferred: pandas is heavy

    config = _config(args)
    job = _with_best(args, _job(args, config))
    metrics = train(job, progress=not args.quiet, checkpoints=config["checkpoints"])
    import pandas as pd  # deferred: pandas is heavy

    from alertvision.evaluation.policies import evaluate_policies, read_exclusion_list  # deferred: pandas is heavy

    exclude = config["policies"]["exclude_sources"]
    policies = evaluate_policies(
        pd.read_parquet(Path(job.run_dir) / "predictions.parquet"),
        figure3_policies(config),
        read_exclusion_list(exclude) if exclude else (),
    )
    f1 = "; ".join(f"{p} F1 {policies[p]['f1']:.3f}" for p in policies)
    print(
        f"test ROC AUC {metrics['test_roc_auc']:.4f} on {metrics['n_test_alerts']} alerts "
        f"({metrics['n_train_alerts']} training alerts); {f1}"
    )
    return 0


def cmd_export(args) -> int:
    from alertvision.study.steps import export  # deferred: pandas is heavy

    config, layout = _config(args), _layout(args)
    run = _export_run_cell(args)
    out = Path(args.out or layout.model_dir(run))
    result = export(
        args.run_dir or layout.run_dir(run),
        args.dataset_dir or layout.dataset_dir(run.dataset),
        args.split or layout.split_file(run.dataset, run.fraction),
        out,
        config["export"],
    )
    parity, ece = result["parity"], result["ece"]
    print(
        f"{out}: model.onnx, model_card.md, reference.parquet, reliability.png; onnxruntime = PyTorch within "
        f"{parity['max_abs_logit_diff']:.2g} on {parity['n_test_alerts']} test alerts; calibration "
        f"{result['calibration']['method']}: test ECE {ece['test, raw']:.3f} -> {ece['test, calibrated']:.3f}"
    )
    return 0


def _export_run_cell(args) -> Run:
    """The grid cell ``export`` exports: the one ``--run-dir``'s metrics.json names (where a given --arch,
    --modality... must agree with it), else the one the command line names (--arch then required)."""
    if not args.run_dir:
        if not args.arch:
            raise SystemExit("export: give --arch (the grid cell's architecture) or --run-dir (a run folder)")

        return Run(
            args.dataset or "ztf",
            args.modality or "image",
            args.arch,
            args.regimen or "none",
            format_fraction(100.0 if args.fraction is None else args.fraction),
            0 if args.seed is None else args.seed,
        )
    metrics = Path(args.run_dir) / "metrics.json"
    if not metrics.is_file():
        raise SystemExit(f"--run-dir {args.run_dir}: no metrics.json there; give the folder of a finished run")
    run = Run.from_values(json.loads(metrics.read_text()))

    given = {"arch": args.arch, "modality": args.modality, "dataset": args.dataset, "regimen": args.regimen}
    given["fraction"] = None if args.fraction is None else format_fraction(args.fraction)
    given["seed"] = args.seed
    for key, value in given.items():
        if value is not None and value != getattr(run, key):
            raise SystemExit(f"--{key} {value} disagrees with --run-dir {args.run_dir}, a {getattr(run, key)} run")
    return run


def cmd_export_best(args) -> int:
    from alertvision.study.steps import export_best  # deferred: pandas is heavy

    result = export_best(args.metrics, args.out, _config(args)["export"])
    chosen = json.loads((Path(args.out) / "run.json").read_text())
    print(f"{args.out}: {chosen} (onnxruntime = PyTorch within {result['parity']['max_abs_logit_diff']:.2g})")
    return 0


def cmd_predict(args) -> int:
    from alertvision.study.steps import predict  # deferred: pandas is heavy

    report = predict(
        args.inputs,
        args.model,
        args.out,
        threads=args.threads,
        batch_size=args.batch_size,
        thresholds=args.thresholds,
        progress=not args.quiet,
        survey=args.survey,
        schemas=args.schemas,
        schema_registry=args.schema_registry,
    )
    skipped = ", ".join(f"{k} {n}" for k, n in report["skipped"].items()) or "none"
    cut = ", ".join(f"{k} {n}" for k, n in report["cut"].items()) or "none"
    synthetic = "; the model was trained on SYNTHETIC data" if report["model_trained_on"] == "SYNTHETIC" else ""
    print(
        f"{args.out}: {report['alerts_scored']} alerts scored in {report['seconds']:.1f} s "
        f"({report['alerts_per_second']:.0f} alerts/s); skipped: {skipped}; "
        f"scored but failing the cuts: {cut}{synthetic}"
    )
    return 0


def cmd_sweep_worker(args) -> int:
    from alertvision.study.steps import sweep_worker  # deferred: pandas is heavy

    config = _config(args)
    sweep = _sweep_of(args, config)
    report = sweep["folder"] / f"worker{args.worker}.json"
    done = sweep_worker(
        _job(args, config, sweep=True),
        report,
        sweep_cfg=sweep["sweep"],
        study_name=sweep["study"],
        progress=not args.quiet,
    )
    print(f"{report}: {json.dumps(done, default=str)}")
    return 0


def cmd_sweep_finalize(args) -> int:
    from alertvision.study.steps import sweep_finalize  # deferred: pandas is heavy

    config = _config(args)
    sweep = _sweep_of(args, config)
    best = sweep_finalize(
        sweep["folder"], sweep_job(config, _run(args)), study_name=sweep["study"], sweep_cfg=sweep["sweep"]
    )
    print(f"{sweep['folder'] / 'best.yaml'}: {json.dumps(best.get('params', best), default=str)}")
    return 0


def cmd_sweep(args) -> int:
    """One worker, then best.yaml: the whole sweep of a configuration in this process."""
    args.worker = 0
    cmd_sweep_worker(args)
    return cmd_sweep_finalize(args)


def cmd_sweep_summary(args) -> int:
    from alertvision.study.steps import sweep_summary  # deferred: pandas is heavy

    table = sweep_summary(args.best, args.out)
    print(table.to_string(index=False))
    return 0


def cmd_aggregate(args) -> int:
    from alertvision.study.steps import aggregate  # deferred: pandas is heavy

    table = aggregate(args.metrics, args.out, bootstrap=_config(args)["bootstrap"])
    print(table.to_string(index=False))
    return 0


def cmd_f1(args) -> int:
    from alertvision.study.steps import f1_table  # deferred: pandas is heavy

    table = f1_table(
        args.metrics, args.out, args.peak_mag_out, args.exclude_sources, bootstrap=_config(args)["bootstrap"]
    )
    print(table.to_string(index=False))
    return 0


def cmd_figure3(args) -> int:
    from alertvision.study.steps import figure3  # deferred: pandas is heavy

    figure3(args.table, args.out, policies=args.policy)
    print(args.out)
    return 0


def cmd_figure2(args) -> int:
    from alertvision.study.steps import figure2  # deferred: pandas is heavy

    figure2(args.table, args.out)
    print(args.out)
    return 0


def cmd_figure5(args) -> int:
    from alertvision.study.steps import figure5  # deferred: pandas is heavy

    figure5(args.table, args.out)
    print(args.out)
    return 0


def _largest_model(config: dict, arch: str, regimen: str, dataset: str, results: str) -> str:
    """The model Table 2 and Figure 4 use: the grid's largest fraction, its first seed."""
    return Layout(results=results).run_file("model.pt", largest_run(config, arch, regimen, dataset))


def cmd_benchmark(args) -> int:
    from alertvision.study.steps import benchmark  # deferred: pandas is heavy

    config = _config(args)
    if args.arch not in config["archs"]:
        raise SystemExit(f"unknown architecture {args.arch!r}; the config has {sorted(config['archs'])}")
    model = args.model or _largest_model(config, args.arch, "none", "ztf", args.results)
    out = args.out or _layout(args).table2_json(args.arch)
    result = benchmark(
        model,
        args.dataset_dir or _layout(args).dataset_dir("ztf"),
        out,
        arch=args.arch,
        arch_block=config["archs"][args.arch],
        benchmark_cfg=config["benchmark"],
        training_cfg=training_params(config, args.arch),
    )
    for row in result["rows"]:
        print(f"{row['arch']} {row['mode']} on {row['device']}: {row['alerts_per_s']:.0f} alerts/s")
    print(out)
    return 0


def cmd_table2(args) -> int:
    from alertvision.data.contract import ALERTS_FILE  # deferred: pandas is heavy
    from alertvision.study.steps import table2  # deferred: pandas is heavy

    config = _config(args)
    table = table2(
        args.json,
        args.out_dir,
        workload=workload_plan(config),
        alerts_file=Path(args.dataset_dir) / ALERTS_FILE,
        splits_cfg=config["splits"],
    )
    print(table.to_string(index=False))
    return 0


def cmd_embed(args) -> int:
    from alertvision.study.steps import embed  # deferred: pandas is heavy

    config = _config(args)
    training = training_params(config, args.arch)
    layout = _layout(args)
    model = args.model or _largest_model(config, args.arch, args.regimen, args.dataset, args.results)
    out = args.out or layout.embeddings_file("embeddings.parquet", args.dataset, args.arch, args.regimen)
    table = embed(
        model,
        args.dataset_dir or layout.dataset_dir(args.dataset),
        out,
        batch_size=training["eval_batch_size"],
        threads=training["threads"],
        device=training["device"],
        progress=not args.quiet,
    )
    print(f"{out}: {len(table)} alerts")
    return 0


def cmd_umap(args) -> int:
    from alertvision.study.steps import umap  # deferred: pandas is heavy

    table = umap(args.embeddings, args.out, _config(args)["embed"]["umap"])
    print(f"{args.out}: {len(table)} alerts")
    return 0


def _named_files(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"{what} expects NAME=PATH, got {item!r}")
        out[name] = path
    return out


def cmd_figure4(args) -> int:
    from alertvision.study.steps import figure4  # deferred: pandas is heavy

    figure4(_named_files(args.panel, "--panel"), args.manifest, args.out)
    print(args.out)
    return 0


def cmd_outliers(args) -> int:
    from alertvision.study.steps import outliers  # deferred: pandas is heavy

    summary = outliers(
        _named_files(args.model, "--model"),
        args.ztf,
        args.out_dir,
        _config(args)["embed"]["isolation_forest"],
        ls_dir=args.ls,
    )
    print(
        f"{args.out_dir}: {summary['n_flagged_any']} alerts flagged, {summary['n_intersection']} by every model, "
        f"{summary['n_cards']} cards"
    )
    return 0


# --------------------------------------------------------------------------- the command table


@dataclass(frozen=True)
class Arg:
    """One command-line argument: argparse's flags and keywords."""

    flags: tuple[str, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)


def arg(*flags: str, **kwargs: Any) -> Arg:
    return Arg(flags, kwargs)


#: The arguments that name a grid cell (a run, or a sweep's configuration without --seed).
CELL_ARGS = (
    arg("--dataset", default="ztf", choices=["ztf", "ls", "lsst"], help="(default: %(default)s)"),
    arg("--modality", default="image", choices=["image", "multimodal"], help="(default: %(default)s)"),
    arg("--arch", required=True, help="an architecture of the config's archs, e.g. cnn"),
    arg("--regimen", default="none", help="a regimen of the config (default: %(default)s)"),
    arg("--fraction", type=float, default=100.0, help="percent of the training sources (default: %(default)s)"),
)
REGIMEN_ARCH_ARGS = (arg("--regimen", required=True), arg("--arch", required=True))
SEED_ARG = arg("--seed", type=int, default=0, help="(default: %(default)s)")
RESULTS_ARG = arg("--results", default=LAYOUT.results, help="results root for default paths (default: %(default)s)")
CELL_INPUT_ARGS = (
    RESULTS_ARG,
    arg("--dataset-dir", help="dataset folder (default: RESULTS/data/DATASET)"),
    arg("--split", help="split table (default: RESULTS/splits/DATASET/fFRACTION.parquet)"),
)
SWEEP_HELP = "(study in sweep.storage, else a journal file in RESULTS/sweeps/DATASET/MODALITY/ARCH/REGIMEN/fFRACTION)"


@dataclass(frozen=True)
class Command:
    """One command: its name, what it runs, the step functions of :mod:`alertvision.study.steps` it calls
    (the same ones the Snakemake scripts call), its help and arguments, and whether it reads the config."""

    name: str
    run: Callable[[argparse.Namespace], int]
    steps: tuple[str, ...]
    help: str
    args: tuple[Arg, ...] = ()
    config: bool = True


COMMANDS: tuple[Command, ...] = (
    Command("config", cmd_config, (), "validate the config and print it with every default filled in"),
    Command(
        "ingest",
        cmd_ingest,
        ("ingest_ztf",),
        "write the ZTF dataset of data.source (alerts.parquet, images.npy, manifest.json)",
        (arg("--out", default=LAYOUT.dataset_dir("ztf"), help="dataset folder (default: %(default)s)"),),
    ),
    Command(
        "ingest-lsst",
        cmd_ingest_lsst,
        ("ingest_lsst",),
        "write the Rubin/LSST dataset of data.lsst.source (synthetic, or avro: data.lsst.avro) (alerts.parquet, "
        "images.npy, manifest.json)",
        (arg("--out", default=LAYOUT.dataset_dir("lsst"), help="dataset folder (default: %(default)s)"),),
    ),
    Command(
        "fetch-kowalski",
        cmd_fetch_kowalski,
        ("fetch_kowalski",),
        "fill data.kowalski.cache_dir from Fritz and Kowalski without building the dataset (e.g. on a login "
        "node with network; tokens from the environment)",
    ),
    Command(
        "ls-dataset",
        cmd_ls_dataset,
        ("ls_dataset",),
        "pair each alert with its source's Legacy Survey grz image",
        (
            arg("--ztf", default=LAYOUT.dataset_dir("ztf"), help="ZTF dataset folder (default: %(default)s)"),
            arg("--out", default=LAYOUT.dataset_dir("ls"), help="dataset folder (default: %(default)s)"),
        ),
    ),
    Command(
        "split",
        cmd_split,
        ("split",),
        "write the rows (train fraction, val, test) one training run uses",
        (
            arg("--dataset-dir", required=True, help=f"dataset folder, e.g. {LAYOUT.dataset_dir('ztf')}"),
            arg("--fraction", type=float, required=True, help="percent of the train sources, e.g. 10"),
            arg("--out", required=True, help="split table to write (.parquet)"),
        ),
    ),
    Command(
        "weights",
        cmd_weights,
        ("fetch_weights",),
        f"fetch the published weights of a (regimen, arch) into {LAYOUT.weights_dir('REGIMEN', 'ARCH')} "
        "(config.json, model.safetensors, source.json), from a local folder, a Hugging Face cache or the hub",
        (
            *REGIMEN_ARCH_ARGS,
            arg("--id", help="a weight id to fetch instead of the config's"),
            arg("--out", help=f"folder to fill (default: {LAYOUT.weights_dir('REGIMEN', 'ARCH')})"),
        ),
    ),
    Command(
        "transfer-weights",
        cmd_transfer_weights,
        ("transfer_weights",),
        "write a transfer regimen's weights into "
        f"{LAYOUT.weights_dir('REGIMEN', 'ARCH')}: the encoder of the run with the best validation ROC AUC "
        "among its candidate runs (the architecture's image runs on the regimen's transfer.from dataset)",
        (
            *REGIMEN_ARCH_ARGS,
            RESULTS_ARG,
            arg("--out", help=f"folder to write (default: {LAYOUT.weights_dir('REGIMEN', 'ARCH')})"),
        ),
    ),
    Command(
        "galaxy-corpus",
        cmd_galaxy_corpus,
        ("galaxy_corpus",),
        "write the SYNTHETIC galaxy corpus of a pre-training regimen",
        (
            arg("--regimen", required=True),
            arg("--out", help=f"corpus folder (default: {LAYOUT.corpus_dir('REGIMEN')})"),
        ),
    ),
    Command(
        "pretrain",
        cmd_pretrain,
        ("pretrain",),
        "pre-train an architecture's encoder on a regimen's corpus (Zoobot-style vote-fraction regression) into "
        f"{LAYOUT.weights_dir('REGIMEN', 'ARCH')}",
        (
            *REGIMEN_ARCH_ARGS,
            arg("--corpus", help="corpus folder (default: the regimen's)"),
            arg("--out", help=f"folder to write (default: {LAYOUT.weights_dir('REGIMEN', 'ARCH')})"),
        ),
    ),
    Command(
        "train",
        cmd_train,
        ("train",),
        "train one grid cell and write model.pt, history.csv, metrics.json, predictions.parquet; a swept "
        "architecture trains with its sweep's best.yaml, as in Snakemake",
        (
            *CELL_ARGS,
            SEED_ARG,
            *CELL_INPUT_ARGS,
            arg("--out-dir", help="run folder (default: the grid path under RESULTS/runs/)"),
            arg(
                "--best",
                help="a sweep's best.yaml to train with (default: the configuration's, when the config sweeps "
                "the architecture)",
            ),
        ),
    ),
    Command(
        "export",
        cmd_export,
        ("export",),
        "export a run for brokers: model.onnx (input transform and metadata fill inside, its contract, "
        "calibration and recommended thresholds in the metadata), model_card.md, reference.parquet and "
        "reliability.png, after checking onnxruntime against PyTorch on the whole test split; calibration and "
        "thresholds come from the validation split only",
        (
            arg("--dataset", choices=["ztf", "ls", "lsst"], help="(default: --run-dir's, else ztf)"),
            arg("--modality", choices=["image", "multimodal"], help="(default: --run-dir's, else image)"),
            arg("--arch", help="an architecture of the config's archs (default: --run-dir's; required without it)"),
            arg("--regimen", help="a regimen of the config (default: --run-dir's, else none)"),
            arg("--fraction", type=float, help="percent of the training sources (default: --run-dir's, else 100)"),
            arg("--seed", type=int, help="(default: --run-dir's, else 0)"),
            *CELL_INPUT_ARGS,
            arg(
                "--run-dir",
                help="the run folder (default: the grid path under RESULTS/runs/); its metrics.json names the "
                "grid cell, so --arch and the rest are not needed",
            ),
            arg("--out", help="folder to write (default: the grid path under RESULTS/models/)"),
        ),
    ),
    Command(
        "export-best",
        cmd_export_best,
        ("export_best",),
        "export the run with the highest validation ROC AUC among the given ones (the study's default: the "
        "multi-modal runs), with run.json naming it",
        (
            arg("metrics", nargs="+", help="metrics.json files of the candidate runs"),
            arg("--out", default=LAYOUT.best_model_file("").rstrip("/"), help="(default: %(default)s)"),
        ),
    ),
    Command(
        "predict",
        cmd_predict,
        ("predict",),
        "score real alert packets (ZTF, or Rubin/LSST with --survey lsst) with an exported model: per alert the "
        "logit, score, calibrated score and whether each trigger policy fires given the source's alerts so far; "
        "Parquet or CSV, written atomically; packets that cannot be scored are skipped and counted by reason",
        (
            arg(
                "inputs",
                nargs="+",
                help=".avro files (also .gz/.bz2/.xz), folders of them, .tar(.gz/.bz2/.xz) archives, - for stdin",
            ),
            arg("--model", required=True, help="an export folder (its model.onnx), a model.onnx, or a run's model.pt"),
            arg("--out", required=True, help="the output file, .parquet or .csv"),
            arg(
                "--threads",
                type=int,
                default=1,
                help="CPU threads: 1 decodes and scores in turn; N > 1 decodes on one while the model scores on N - 1 "
                "(default: %(default)s)",
            ),
            arg("--batch-size", type=int, default=256, help="alerts per model call (default: %(default)s)"),
            arg(
                "--thresholds",
                choices=("policy", "recommended"),
                default="policy",
                help="policy: the trigger policies as the study scores them (their thresholds on the score); "
                "recommended: each policy's max-F1 threshold recommended at export, on the calibrated score "
                "(default: %(default)s)",
            ),
            arg(
                "--survey",
                choices=("ztf", "lsst"),
                default="ztf",
                help="the packets' survey: ztf, or lsst (Rubin's containers or wire packets); a model trained on "
                "another survey is refused (default: %(default)s)",
            ),
            arg(
                "--schemas",
                default=None,
                help="--survey lsst: a folder of Rubin alert schemas for wire packets, searched first (as the "
                "config's data.lsst.schemas.folder), then --schema-registry, then the installed lsst-alert-packet",
            ),
            arg(
                "--schema-registry",
                default=None,
                help="--survey lsst: a schema registry URL for wire packets' schemas (data.lsst.schemas.registry)",
            ),
        ),
        config=False,
    ),
    Command(
        "sweep",
        cmd_sweep,
        ("sweep_worker", "sweep_finalize"),
        "sweep one configuration's hyperparameters (Table 1's space) in this process, then write best.yaml, "
        f"trials.csv and trials.png {SWEEP_HELP}",
        (*CELL_ARGS, *CELL_INPUT_ARGS),
    ),
    Command(
        "sweep-worker",
        cmd_sweep_worker,
        ("sweep_worker",),
        "one worker of a configuration's sweep: adds trials until the study holds sweep.trials finished ones; "
        f"start several at once on one study {SWEEP_HELP}",
        (
            *CELL_ARGS,
            *CELL_INPUT_ARGS,
            arg("--worker", type=int, default=0, help="worker number, names its report workerN.json"),
        ),
    ),
    Command(
        "sweep-finalize",
        cmd_sweep_finalize,
        ("sweep_finalize",),
        "write best.yaml, trials.csv and trials.png of a configuration whose sweep workers are done",
        (*CELL_ARGS, *CELL_INPUT_ARGS),
    ),
    Command(
        "sweep-summary",
        cmd_sweep_summary,
        ("sweep_summary",),
        "gather best.yaml files into one table",
        (arg("best", nargs="+", help="best.yaml files"), arg("--out", default=LAYOUT.sweep_summary())),
        config=False,
    ),
    Command(
        "aggregate",
        cmd_aggregate,
        ("aggregate",),
        "aggregate metrics.json files into roc_auc.csv (median, std over seeds, and the bootstrap std over test "
        "sources from each run's predictions.parquet, settings from the config's bootstrap block)",
        (arg("metrics", nargs="+", help="metrics.json files"), arg("--out", default=LAYOUT.table("roc_auc.csv"))),
    ),
    Command(
        "figure2",
        cmd_figure2,
        ("figure2",),
        "draw Figure 2 from roc_auc.csv",
        (arg("--table", default=LAYOUT.table("roc_auc.csv")), arg("--out", default=LAYOUT.figure(2))),
        config=False,
    ),
    Command(
        "figure5",
        cmd_figure5,
        ("figure5",),
        "draw Figure 5 (transfer to a new survey: test ROC AUC on LSST per regimen) from transfer_roc_auc.csv",
        (arg("--table", default=LAYOUT.table("transfer_roc_auc.csv")), arg("--out", default=LAYOUT.figure(5))),
        config=False,
    ),
    Command(
        "f1",
        cmd_f1,
        ("f1_table",),
        "score the trigger policies on the runs' test predictions and aggregate them into f1.csv (median, std "
        "over seeds, and the bootstrap std of F1 over test sources, settings from the config's bootstrap block) "
        "and completeness per peak-magnitude bin",
        (
            arg(
                "metrics",
                nargs="+",
                help="metrics.json files (multi-modal runs for Figure 3); each run's predictions.parquet is read "
                "from beside it",
            ),
            arg("--out", default=LAYOUT.table("f1.csv")),
            arg("--peak-mag-out", default=LAYOUT.table("completeness_peak_mag.csv")),
            arg("--exclude-sources", help="a file of objectIds the policies leave out (RCFJunk, say)"),
        ),
    ),
    Command(
        "figure3",
        cmd_figure3,
        ("figure3",),
        "draw Figure 3 (F1 of the trigger policies, one panel row each, multi-modal models) from f1.csv",
        (
            arg("--table", default=LAYOUT.table("f1.csv")),
            arg(
                "--policy",
                "--policies",
                nargs="+",
                choices=["bts_p1", "bts_p2", "prod_p1", "prod_p2"],
                help="policies to draw, one panel row each, in this order (default: all four)",
            ),
            arg("--out", default=LAYOUT.figure(3)),
        ),
        config=False,
    ),
    Command(
        "benchmark",
        cmd_benchmark,
        ("benchmark",),
        "Table 2 rows of one architecture: inference throughput and memory on the test split (paper protocol "
        "and production mode, CPU and CUDA when present) and a training burst",
        (
            arg("--arch", required=True),
            RESULTS_ARG,
            arg(
                "--model",
                help="model.pt to measure (default: the ZTF run of regimen none, largest fraction, first seed)",
            ),
            arg("--dataset-dir", help="dataset folder whose test split is scored (default: RESULTS/data/ztf)"),
            arg("--out", help="JSON to write (default: RESULTS/table2/ARCH.json)"),
        ),
    ),
    Command(
        "table2",
        cmd_table2,
        ("table2",),
        "gather benchmark JSON files into table2.csv, .md and .tex, with the compute estimate of the config's "
        "grid and sweeps",
        (
            arg("json", nargs="+", help="files written by `alertvision benchmark`"),
            arg("--out-dir", default=LAYOUT.results, help="folder of the table files (default: %(default)s)"),
            arg(
                "--dataset-dir",
                default=LAYOUT.dataset_dir("ztf"),
                help="ZTF dataset whose train split the estimate counts (default: %(default)s)",
            ),
        ),
    ),
    Command(
        "embed",
        cmd_embed,
        ("embed",),
        "penultimate-layer embeddings of a run's test alerts (Figure 4's input)",
        (
            arg("--arch", required=True),
            arg("--regimen", default="none"),
            arg("--dataset", default="ztf"),
            RESULTS_ARG,
            arg("--model", help="model.pt (default: the run of the largest fraction, first seed)"),
            arg("--dataset-dir", help="dataset folder (default: RESULTS/data/DATASET)"),
            arg("--out", help="parquet to write (default: RESULTS/embeddings/DATASET/ARCH/REGIMEN/embeddings.parquet)"),
        ),
    ),
    Command(
        "umap",
        cmd_umap,
        ("umap",),
        "seeded 2-D UMAP of an embeddings table (settings from embed.umap)",
        (
            arg("embeddings", help="embeddings.parquet written by `alertvision embed`"),
            arg("--out", required=True, help="parquet of 2-D coordinates to write"),
        ),
    ),
    Command(
        "figure4",
        cmd_figure4,
        ("figure4",),
        "draw Figure 4 from UMAP tables, one panel each",
        (
            arg(
                "--panel",
                action="append",
                required=True,
                metavar="TITLE=UMAP_PARQUET",
                help=f"a panel, in order, e.g. --panel CNN={LAYOUT.embeddings_dir('ztf', 'cnn', 'none')}/umap.parquet",
            ),
            arg(
                "--manifest",
                default=LAYOUT.dataset_file("manifest.json", "ztf"),
                help="the dataset's manifest (name, synthetic)",
            ),
            arg("--out", default=LAYOUT.figure(4)),
        ),
        config=False,
    ),
    Command(
        "outliers",
        cmd_outliers,
        ("outliers",),
        "Isolation-Forest outliers per subset of each model's UMAP: outliers.csv and a page of cards (settings "
        "from embed.isolation_forest)",
        (
            arg(
                "--model",
                action="append",
                required=True,
                metavar="NAME=UMAP_PARQUET",
                help=f"a model's UMAP table, e.g. --model maxvit_none={LAYOUT.embeddings_dir('ztf', 'maxvit', 'none')}"
                "/umap.parquet",
            ),
            arg("--ztf", default=LAYOUT.dataset_dir("ztf"), help="ZTF dataset folder (cutouts)"),
            arg("--ls", help="Legacy Survey dataset folder (grz images on the cards), optional"),
            arg("--out-dir", default=LAYOUT.outliers_dir()),
        ),
    ),
)

CONFIG_ARGS = (
    arg(
        "--config",
        action="append",
        metavar="FILE",
        help="study config file; repeat to merge several in order. Given files replace config/config.yaml (the "
        "default) and the schema fills what they leave out, exactly as `snakemake --configfile FILE ...` resolves "
        "them",
    ),
    arg(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value by dotted key, e.g. --set training.epochs=2",
    ),
)
COMMON_ARGS = (
    arg("--log", help="also write the log to this file"),
    arg("-q", "--quiet", action="store_true", help="no progress bars"),
)


def build_parser() -> argparse.ArgumentParser:
    """The parser, generated from :data:`COMMANDS`."""
    p = argparse.ArgumentParser(
        prog="alertvision",
        description=(
            "Train and compare vision models for alert classification (Rehemtulla et al.). Each command "
            "is one step of the Snakemake pipeline, calling the same step function as its rule; `snakemake --cores N` "
            "runs them all (target "
            f"{LAYOUT.figure(2)}: Figure 2 only). Configs resolve as in Snakemake: config/config.yaml, or the "
            "--config files merged in order instead of it, then --set values; the schema fills every key left "
            "out. Default paths are the pipeline's (RESULTS below: --results, default results)."
        ),
    )
    p.add_argument("--version", action="version", version=f"alertvision {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sp = sub.add_parser(command.name, help=command.help, description=command.help)
        for a in (*command.args, *(CONFIG_ARGS if command.config else ()), *COMMON_ARGS):
            sp.add_argument(*a.flags, **a.kwargs)
        sp.set_defaults(func=command.run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    setup_logging(args.log)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"alertvision: {exc}", file=sys.__stderr__)
        return 2
    except Exception as exc:  # a clear last line for users; the traceback goes to the log
        log.exception("%s failed", args.command)
        print(f"alertvision {args.command}: {type(exc).__name__}: {exc}", file=sys.__stderr__)
        return 1
