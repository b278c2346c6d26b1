"""``alertvision <step>``: every pipeline step as a command, for use without Snakemake."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from alertvision import __version__

log = logging.getLogger("alertvision")


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE (dotted key), got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def _config(args) -> dict:
    from alertvision.config import load_config

    return load_config(args.config, _parse_set(args.set))


def _run_paths(args) -> dict[str, Path]:
    from alertvision.config import format_fraction

    frac = format_fraction(args.fraction)
    root = Path(args.results)
    return {
        "dataset": root / "data" / args.dataset,
        "split": root / "splits" / args.dataset / f"f{frac}.parquet",
        "run": root / "runs" / args.dataset / args.modality / args.arch / args.regimen / f"f{frac}" / f"s{args.seed}",
        "weights": root / "weights" / args.regimen / f"{args.arch}.json",
    }


def cmd_config(args) -> int:
    print(yaml.safe_dump(_config(args), sort_keys=False))
    return 0


def cmd_ingest(args) -> int:
    from alertvision.sources import ingest_ztf

    manifest = ingest_ztf(_config(args), args.out, progress=not args.quiet)
    print(f"{args.out}: {manifest['n_alerts']} alerts of {manifest['n_sources']} sources "
          f"({'SYNTHETIC' if manifest['synthetic'] else manifest['source']})")
    return 0


def cmd_fetch_kowalski(args) -> int:
    from alertvision.ingest.kowalski import fetch_kowalski

    fetched = fetch_kowalski(_config(args), progress=not args.quiet)
    print(f"{fetched.cache_dir}: answers for {len(fetched.labels)} sources cached "
          f"({fetched.stats['listed_sources']})")
    return 0


def cmd_ls_dataset(args) -> int:
    from alertvision.sources import ingest_ls

    manifest = ingest_ls(_config(args), args.ztf, args.out, progress=not args.quiet)
    cov = manifest["coverage"]
    print(f"{args.out}: {manifest['n_alerts']} alerts; sources {cov['sources']}")
    return 0


def cmd_split(args) -> int:
    from alertvision.steps import split

    table = split(args.dataset_dir, args.fraction, _config(args)["splits"], args.out)
    print(f"{args.out}: {table['split'].value_counts().to_dict()}")
    return 0


def cmd_weights(args) -> int:
    from alertvision.config import pretrain_archs, weight_id, weights_folder
    from alertvision.steps import fetch_weights

    config = _config(args)
    if not args.id and args.arch in pretrain_archs(config, args.regimen):
        raise SystemExit(f"regimen {args.regimen!r} pre-trains its weights: run `alertvision pretrain --regimen "
                         f"{args.regimen} --arch {args.arch}`")
    wid = args.id or weight_id(config, args.regimen, args.arch)
    if wid is None:
        raise SystemExit(f"regimen {args.regimen!r} has no weights for {args.arch!r} (random init)")
    out = args.out or weights_folder(args.regimen, args.arch)
    info = fetch_weights(wid, config["weights"], out)
    print(f"{wid}: {info['folder']} ({info['architecture']}, via {info['via']})")
    return 0


def cmd_galaxy_corpus(args) -> int:
    from alertvision.config import corpus_folder
    from alertvision.steps import galaxy_corpus

    config = _config(args)
    block = _pretrain_block(config, args.regimen)
    out = args.out or corpus_folder(config, args.regimen)
    manifest = galaxy_corpus(block["corpus"], out, progress=not args.quiet)
    print(f"{out}: {manifest['n_images']} SYNTHETIC galaxy images of {manifest['size']} px")
    return 0


def _pretrain_block(config: dict, regimen: str) -> dict:
    spec = config["regimens"].get(regimen)
    if spec is None or spec.get("pretrain") is None:
        raise SystemExit(f"regimen {regimen!r} has no `pretrain` block in the config "
                         f"(pre-training regimens: {[r for r, v in config['regimens'].items() if v.get('pretrain')]})")
    return spec["pretrain"]


def cmd_pretrain(args) -> int:
    from alertvision.config import corpus_folder, weights_folder
    from alertvision.steps import pretrain

    config = _config(args)
    block = _pretrain_block(config, args.regimen)
    corpus = args.corpus or corpus_folder(config, args.regimen)
    out = args.out or weights_folder(args.regimen, args.arch)
    summary = pretrain(corpus, out, arch_cfg=config["archs"][args.arch], pretrain_cfg=block, progress=not args.quiet)
    print(f"{out}: loss {summary['first_train_loss']:.3f} -> {summary['last_train_loss']:.3f} (train), best val "
          f"{summary['best_val_loss']:.3f}")
    return 0


def cmd_train(args) -> int:
    from alertvision.config import (figure3_policies, format_fraction, model_spec, training_params, weight_id,
                                    weights_folder)
    from alertvision.steps import train

    config = _config(args)
    paths = _run_paths(args)
    wid = weight_id(config, args.regimen, args.arch)
    folder = None
    if wid is not None:
        folder = weights_folder(args.regimen, args.arch)
        if not Path(folder, "config.json").is_file():
            raise SystemExit(f"{folder} holds no weights yet: run `alertvision weights --regimen {args.regimen} "
                             f"--arch {args.arch}` (or `alertvision pretrain` for a pre-training regimen) first")
    info = dict(dataset=args.dataset, modality=args.modality, arch=args.arch, regimen=args.regimen,
                fraction=format_fraction(args.fraction), seed=args.seed)
    run_dir = Path(args.out_dir or paths["run"])
    metrics = train(args.dataset_dir or paths["dataset"], args.split or paths["split"], run_dir,
                    arch_cfg=model_spec(config, args.arch, args.modality, args.regimen),
                    training=training_params(config, args.arch, args.modality),
                    seed=args.seed, weights_dir=folder, weight_id=wid, run_info=info, progress=not args.quiet)
    import pandas as pd

    from alertvision.policies import evaluate_policies, read_exclusion_list

    exclude = config["policies"]["exclude_sources"]
    policies = evaluate_policies(pd.read_parquet(run_dir / "predictions.parquet"), figure3_policies(config),
                                 read_exclusion_list(exclude) if exclude else ())
    f1 = "; ".join(f"{p} F1 {policies[p]['f1']:.3f}" for p in policies)
    print(f"test ROC AUC {metrics['test_roc_auc']:.4f} on {metrics['n_test_alerts']} alerts "
          f"({metrics['n_train_alerts']} training alerts); {f1}")
    return 0


def cmd_aggregate(args) -> int:
    from alertvision.steps import aggregate

    table = aggregate(args.metrics, args.out)
    print(table.to_string(index=False))
    return 0


def cmd_f1(args) -> int:
    from alertvision.steps import f1_table

    table = f1_table(args.metrics, args.out, args.peak_mag_out, args.exclude_sources)
    print(table.to_string(index=False))
    return 0


def cmd_figure3(args) -> int:
    from alertvision.steps import figure3

    figure3(args.table, args.out, policies=args.policy)
    print(args.out)
    return 0


def cmd_figure2(args) -> int:
    from alertvision.steps import figure2

    figure2(args.table, args.out)
    print(args.out)
    return 0


def _largest_run(config: dict, arch: str, regimen: str, dataset: str, results: str) -> Path:
    """The run folder Table 2 and Figure 4 use: the grid's largest fraction, its first seed."""
    from alertvision.embedplan import run_of

    return Path(results) / Path(run_of(config, arch, regimen, dataset=dataset).model_path).relative_to("results")


def cmd_benchmark(args) -> int:
    from alertvision.config import training_params
    from alertvision.throughput import benchmark_run

    config = _config(args)
    if args.arch not in config["archs"]:
        raise SystemExit(f"unknown architecture {args.arch!r}; the config has {sorted(config['archs'])}")
    model = args.model or _largest_run(config, args.arch, "none", "ztf", args.results)
    out = args.out or Path(args.results) / "table2" / f"{args.arch}.json"
    result = benchmark_run(model, args.dataset_dir or Path(args.results) / "data" / "ztf", out, arch=args.arch,
                           arch_cfg=config["archs"][args.arch], benchmark_cfg=config["benchmark"],
                           training_cfg=training_params(config, args.arch))
    for row in result["rows"]:
        print(f"{row['arch']} {row['mode']} on {row['device']}: {row['alerts_per_s']:.0f} alerts/s")
    print(out)
    return 0


def cmd_table2(args) -> int:
    from alertvision.contract import ALERTS_FILE
    from alertvision.throughput import table2
    from alertvision.workload import StudyWorkload, workload_plan

    config = _config(args)
    workload = StudyWorkload.from_dataset(workload_plan(config), Path(args.dataset_dir) / ALERTS_FILE,
                                          config["splits"])
    out = Path(args.out_dir)
    table = table2(args.json, out / "table2.csv", out / "table2.md", out / "table2.tex", workload)
    print(table.to_string(index=False))
    return 0


def cmd_embed(args) -> int:
    from alertvision.config import training_params
    from alertvision.embeddings import embed_run

    config = _config(args)
    training = training_params(config, args.arch)
    model = args.model or _largest_run(config, args.arch, args.regimen, args.dataset, args.results)
    out = args.out or Path(args.results) / "embeddings" / args.dataset / args.arch / args.regimen / "embeddings.parquet"
    table = embed_run(model, args.dataset_dir or Path(args.results) / "data" / args.dataset, out,
                      batch_size=training["eval_batch_size"], threads=training["threads"], device=training["device"],
                      progress=not args.quiet)
    print(f"{out}: {len(table)} alerts")
    return 0


def cmd_umap(args) -> int:
    from alertvision.latent import write_umap

    table = write_umap(args.embeddings, args.out, _config(args)["embed"]["umap"])
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
    from alertvision.figure4 import figure4_from_files

    figure4_from_files(_named_files(args.panel, "--panel"), args.manifest, args.out)
    print(args.out)
    return 0


def cmd_outliers(args) -> int:
    from alertvision.gallery import build_outlier_report

    summary = build_outlier_report(_named_files(args.model, "--model"), args.ztf, args.out_dir,
                                   _config(args)["embed"]["isolation_forest"], ls_dir=args.ls)
    print(f"{args.out_dir}: {summary['n_flagged_any']} alerts flagged, {summary['n_intersection']} by every model, "
          f"{summary['n_cards']} cards")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alertvision", description=(
        "Train and compare vision models for alert classification (Rehemtulla et al.). Each command "
        "is one step of the Snakemake pipeline; `snakemake --cores N` runs them all (target "
        "results/figure2.pdf: Figure 2 only). Configs resolve as in Snakemake: config/config.yaml, or the "
        "--config files merged in order instead of it, then --set values; the schema fills every key left "
        "out."))
    p.add_argument("--version", action="version", version=f"alertvision {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help_text: str, config: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if config:
            sp.add_argument("--config", action="append", metavar="FILE",
                            help="study config file; repeat to merge several in order. Given files replace "
                                 "config/config.yaml (the default) and the schema fills what they leave out, "
                                 "exactly as `snakemake --configfile FILE ...` resolves them")
            sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override a config value by dotted key, e.g. --set training.epochs=2")
        sp.add_argument("--log", help="also write the log to this file")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        sp.set_defaults(func=func)
        return sp

    add("config", cmd_config, "validate the config and print it with every default filled in")
    sp = add("ingest", cmd_ingest, "write the ZTF dataset of data.source (alerts.parquet, images.npy, manifest.json)")
    sp.add_argument("--out", default="results/data/ztf", help="dataset folder (default: %(default)s)")
    add("fetch-kowalski", cmd_fetch_kowalski, "fill data.kowalski.cache_dir from Fritz and Kowalski without "
        "building the dataset (e.g. on a login node with network; tokens from the environment)")
    sp = add("ls-dataset", cmd_ls_dataset, "pair each alert with its source's Legacy Survey grz image")
    sp.add_argument("--ztf", default="results/data/ztf", help="ZTF dataset folder (default: %(default)s)")
    sp.add_argument("--out", default="results/data/ls", help="dataset folder (default: %(default)s)")
    sp = add("split", cmd_split, "write the rows (train fraction, val, test) one training run uses")
    sp.add_argument("--dataset-dir", required=True, help="dataset folder, e.g. results/data/ztf")
    sp.add_argument("--fraction", type=float, required=True, help="percent of the train sources, e.g. 10")
    sp.add_argument("--out", required=True, help="split table to write (.parquet)")
    sp = add("weights", cmd_weights, "fetch the published weights of a (regimen, arch) into resources/weights/ "
             "(config.json, model.safetensors, source.json), from a local folder, a Hugging Face cache or the hub")
    sp.add_argument("--regimen", required=True)
    sp.add_argument("--arch", required=True)
    sp.add_argument("--id", help="a weight id to fetch instead of the config's")
    sp.add_argument("--out", help="folder to fill (default: resources/weights/REGIMEN/ARCH)")
    sp = add("galaxy-corpus", cmd_galaxy_corpus, "write the SYNTHETIC galaxy corpus of a pre-training regimen")
    sp.add_argument("--regimen", required=True)
    sp.add_argument("--out", help="corpus folder (default: resources/corpora/REGIMEN)")
    sp = add("pretrain", cmd_pretrain, "pre-train an architecture's encoder on a regimen's corpus (Zoobot-style "
             "vote-fraction regression) into resources/weights/REGIMEN/ARCH")
    sp.add_argument("--regimen", required=True)
    sp.add_argument("--arch", required=True)
    sp.add_argument("--corpus", help="corpus folder (default: the regimen's)")
    sp.add_argument("--out", help="folder to write (default: resources/weights/REGIMEN/ARCH)")
    sp = add("train", cmd_train, "train one grid cell and write model.pt, history.csv, metrics.json, predictions.parquet")
    for name, kw in (("--dataset", dict(default="ztf")), ("--modality", dict(default="image")),
                     ("--arch", dict(required=True)), ("--regimen", dict(default="none")),
                     ("--fraction", dict(type=float, default=100.0)), ("--seed", dict(type=int, default=0))):
        sp.add_argument(name, **kw)
    sp.add_argument("--results", default="results", help="results root for default paths (default: %(default)s)")
    sp.add_argument("--dataset-dir", help="dataset folder (default: RESULTS/data/DATASET)")
    sp.add_argument("--split", help="split table (default: RESULTS/splits/DATASET/fFRACTION.parquet)")
    sp.add_argument("--out-dir", help="run folder (default: the grid path under RESULTS/runs/)")
    sp = add("aggregate", cmd_aggregate, "aggregate metrics.json files into roc_auc.csv (median, std over seeds)", config=False)
    sp.add_argument("metrics", nargs="+", help="metrics.json files")
    sp.add_argument("--out", default="results/tables/roc_auc.csv")
    sp = add("figure2", cmd_figure2, "draw Figure 2 from roc_auc.csv", config=False)
    sp.add_argument("--table", default="results/tables/roc_auc.csv")
    sp.add_argument("--out", default="results/figure2.pdf")
    sp = add("f1", cmd_f1, "score the trigger policies on the runs' test predictions and aggregate them into "
             "f1.csv (median, std over seeds) and completeness per peak-magnitude bin", config=False)
    sp.add_argument("metrics", nargs="+", help="metrics.json files (multi-modal runs for Figure 3); each run's "
                                               "predictions.parquet is read from beside it")
    sp.add_argument("--out", default="results/tables/f1.csv")
    sp.add_argument("--peak-mag-out", default="results/tables/completeness_peak_mag.csv")
    sp.add_argument("--exclude-sources", help="a file of objectIds the policies leave out (RCFJunk, say)")
    sp = add("figure3", cmd_figure3, "draw Figure 3 (F1 of the trigger policies, one panel row each, multi-modal "
             "models) from f1.csv", config=False)
    sp.add_argument("--table", default="results/tables/f1.csv")
    sp.add_argument("--policy", "--policies", nargs="+", choices=["bts_p1", "bts_p2", "prod_p1", "prod_p2"],
                    help="policies to draw, one panel row each, in this order (default: all four)")
    sp.add_argument("--out", default="results/figure3.pdf")
    sp = add("benchmark", cmd_benchmark, "Table 2 rows of one architecture: inference throughput and memory on the "
             "test split (paper protocol and production mode, CPU and CUDA when present) and a training burst")
    sp.add_argument("--arch", required=True)
    sp.add_argument("--results", default="results", help="results root for default paths (default: %(default)s)")
    sp.add_argument("--model", help="model.pt to measure (default: the ZTF run of regimen none, largest fraction, "
                    "first seed)")
    sp.add_argument("--dataset-dir", help="dataset folder whose test split is scored (default: RESULTS/data/ztf)")
    sp.add_argument("--out", help="JSON to write (default: RESULTS/table2/ARCH.json)")
    sp = add("table2", cmd_table2, "gather benchmark JSON files into table2.csv, .md and .tex, with the compute "
             "estimate of the config's grid and sweeps")
    sp.add_argument("json", nargs="+", help="files written by `alertvision benchmark`")
    sp.add_argument("--out-dir", default="results", help="folder of the table files (default: %(default)s)")
    sp.add_argument("--dataset-dir", default="results/data/ztf",
                    help="ZTF dataset whose train split the estimate counts (default: %(default)s)")
    sp = add("embed", cmd_embed, "penultimate-layer embeddings of a run's test alerts (Figure 4's input)")
    sp.add_argument("--arch", required=True)
    sp.add_argument("--regimen", default="none")
    sp.add_argument("--dataset", default="ztf")
    sp.add_argument("--results", default="results", help="results root for default paths (default: %(default)s)")
    sp.add_argument("--model", help="model.pt (default: the run of the largest fraction, first seed)")
    sp.add_argument("--dataset-dir", help="dataset folder (default: RESULTS/data/DATASET)")
    sp.add_argument("--out", help="parquet to write (default: RESULTS/embeddings/DATASET/ARCH/REGIMEN/embeddings.parquet)")
    sp = add("umap", cmd_umap, "seeded 2-D UMAP of an embeddings table (settings from embed.umap)")
    sp.add_argument("embeddings", help="embeddings.parquet written by `alertvision embed`")
    sp.add_argument("--out", required=True, help="parquet of 2-D coordinates to write")
    sp = add("figure4", cmd_figure4, "draw Figure 4 from UMAP tables, one panel each", config=False)
    sp.add_argument("--panel", action="append", required=True, metavar="TITLE=UMAP_PARQUET",
                    help="a panel, in order, e.g. --panel CNN=results/embeddings/ztf/cnn/none/umap.parquet")
    sp.add_argument("--manifest", default="results/data/ztf/manifest.json", help="the dataset's manifest (name, synthetic)")
    sp.add_argument("--out", default="results/figure4.pdf")
    sp = add("outliers", cmd_outliers, "Isolation-Forest outliers per subset of each model's UMAP: outliers.csv and "
             "a page of cards (settings from embed.isolation_forest)")
    sp.add_argument("--model", action="append", required=True, metavar="NAME=UMAP_PARQUET",
                    help="a model's UMAP table, e.g. --model maxvit_none=results/embeddings/ztf/maxvit/none/umap.parquet")
    sp.add_argument("--ztf", default="results/data/ztf", help="ZTF dataset folder (cutouts)")
    sp.add_argument("--ls", help="Legacy Survey dataset folder (grz images on the cards), optional")
    sp.add_argument("--out-dir", default="results/outliers")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from alertvision.config import ConfigError
    from alertvision.logs import setup_logging

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
