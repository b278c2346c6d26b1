"""Table 2: the production mode stays within tolerance, what was timed, the tables, the workload and
compute estimate from a config, the rule's step.

No timing is asserted: speed claims come from benchmarks/table2.py only.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from alertvision.config import grid_cells, load_config, validate_config
from alertvision.models import build_model, save_model
from alertvision.reports import table2 as tp
from alertvision.reports.table2.estimate import StudyWorkload, format_estimate, study_hours
from alertvision.reports.workload import workload_plan
from alertvision.study.jobs import training_params

REPO = Path(__file__).resolve().parents[2]
HEAD = {"dense1": 32, "dense2": 8, "dropout": 0.5}
ARCHS = {
    "cnn": {
        "kind": "cnn",
        "input_size": 63,
        "input_scale": 63.0,
        "conv1_channels": 16,
        "conv2_channels": 32,
        "conv_kernel": 5,
        "conv_dropout1": 0.25,
        "conv_dropout2": 0.25,
    },
    "convnext": {"kind": "timm", "timm_name": "convnext_pico", "input_size": 32, "input_scale": 63.0},
}
CPU = torch.device("cpu")


def small_settings(**overrides) -> tp.BenchSettings:
    base = dict(
        batch_size=16,
        trials=1,
        min_alerts=48,
        cpu_threads=2,
        cpu_batch_size=32,
        train_steps=1,
        train_warmup=0,
        probe_seconds=0.0,
    )
    return tp.BenchSettings(**{**base, **overrides})


@pytest.fixture(autouse=True)
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def inputs() -> tp.AlertInputs:
    return tp.random_inputs(40, seed=1)


def _model(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ARCHS[arch], HEAD).eval()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_production_mode_agrees_with_the_paper_protocol(arch, inputs):
    settings = small_settings()
    rows, report = tp.benchmark_model(_model(arch), arch, ARCHS[arch], inputs, settings, [CPU])
    paper, production = rows
    assert (paper.mode, production.mode) == (tp.PAPER, tp.PRODUCTION)
    assert paper.max_score_dev == 0.0 and paper.batch_size == 16 and paper.speedup == 1.0
    assert production.within_tolerance and production.max_score_dev <= settings.tolerance
    assert production.alerts_timed >= settings.min_alerts
    assert production.alerts_timed % production.batch_size == 0
    assert (paper.alerts_timed, paper.scope) == (48, "random cutouts cycled to 48")
    assert production.scope == f"random cutouts cycled to {production.alerts_timed}"
    assert production.setup.startswith(tuple(c.setup for c in report if c.chosen))
    assert sum(c.chosen for c in report) == 1
    assert all(
        c.rejected is not None
        for c in report
        if c.first_batch_dev is not None and c.first_batch_dev > settings.tolerance
    )
    for row in rows:
        assert row.device == tp.cpu_name() and row.threads == 2 and row.alerts_per_s > 0 and row.peak_memory_mb > 0


class Shifted(tp.TorchScorer):
    """Scores off by 0.01 from position ``after`` on."""

    after = 0

    def score(self, images, seq):
        s = super().score(images, seq)
        s[self.after :] += 0.01
        return s


class LateShifted(Shifted):
    after = 16


def test_a_candidate_beyond_tolerance_is_never_chosen(inputs):
    model, settings = _model("cnn"), small_settings()
    seq = tp.alert_sequence(inputs.rows, settings.min_alerts, 16)
    reference = tp.TorchScorer(model, CPU, 16, "reference").score(inputs.images, seq)
    specs = [
        ("shifted", 16, lambda: Shifted(model, CPU, 16, "shifted")),
        ("late", 16, lambda: LateShifted(model, CPU, 16, "late")),
        ("plain", 32, lambda: tp.TorchScorer(model, CPU, 32, "plain")),
    ]
    ranked, report = tp.rank_candidates(specs, CPU, inputs.images, seq, reference, settings)
    assert "tolerance" in report[0].rejected and report[1].rejected is None  # late drift passes one batch
    assert {c.setup for c, _ in ranked} == {"late", "plain"}
    late_only = [cs for cs in ranked if cs[0].setup == "late"]
    paper = tp.paper_scorer(model, CPU, settings)
    result = tp.accept_production(late_only, paper, inputs, settings.min_alerts, reference, settings)
    assert "full-pass" in late_only[0][0].rejected and not late_only[0][0].chosen
    assert result.scorer.setup.startswith("no candidate within tolerance") and result.max_dev == 0.0
    plain = [cs for cs in ranked if cs[0].setup == "plain"]
    result = tp.accept_production(late_only + plain, paper, inputs, settings.min_alerts, reference, settings)
    assert result.scorer.setup == "plain" and plain[0][0].chosen


def test_sequences_cycle_the_split_in_whole_batches():
    rows = np.array([3, 5, 9])
    a, b = tp.alert_sequence(rows, 10, 4), tp.alert_sequence(rows, 10, 8)
    assert len(a) == 12 and len(b) == 16
    assert np.array_equal(a, b[:12]) and set(a) == {3, 5, 9}
    assert np.array_equal(tp.alert_sequence(rows, None, 2), rows)  # the whole split once
    assert tp.max_deviation(np.array([0.5, np.nan]), np.array([0.5, 0.5])) == float("inf")
    split = tp.AlertInputs(np.zeros((3, 1)), rows, "x")
    assert [tp.timed_scope(split, n) for n in (3, 12, 2)] == [
        "test split",
        "test split cycled to 12",
        "first 2 of the test split",
    ]


@pytest.mark.parametrize("arch", ["cnn"])
def test_whole_split_mode_times_every_test_alert_once(arch, inputs):
    settings = small_settings(min_alerts=None)
    rows, _ = tp.benchmark_model(_model(arch), arch, ARCHS[arch], inputs, settings, [CPU])
    assert [(r.alerts_timed, r.scope) for r in rows] == [(len(inputs.rows), "random cutouts")] * 2
    assert all(r.within_tolerance for r in rows)


def _rows() -> list[tp.Row]:
    common = dict(
        timm_name="convnext_pico",
        input_size=63,
        threads=2,
        peak_memory_mb=512.0,
        memory="x",
        within_tolerance=True,
        alerts_timed=1024,
        scope="test split cycled to 1,024",
        trials=3,
    )
    return [
        tp.Row(
            arch="convnext",
            mode=tp.PAPER,
            device="NVIDIA H100 80GB HBM3",
            batch_size=32,
            alerts_per_s=1000.0,
            speedup=1.0,
            max_score_dev=0.0,
            setup="float32 eager, contiguous, batch 32",
            **common,
        ),
        tp.Row(
            arch="convnext",
            mode=tp.PRODUCTION,
            device="NVIDIA H100 80GB HBM3",
            batch_size=1024,
            alerts_per_s=9000.0,
            speedup=9.0,
            max_score_dev=2e-4,
            setup="torch.compile, bf16 autocast, channels_last, batch 1024",
            **common,
        ),
    ]


def _training(arch="convnext", kind="timm", naive=100.0, production=200.0) -> dict:
    return {
        "arch": arch,
        "kind": kind,
        "input_size": 63,
        "device": "NVIDIA H100 80GB HBM3",
        "device_type": "cuda",
        "naive_alerts_per_s": naive,
        "production_alerts_per_s": production,
    }


#: A small study: two datasets, both modalities, the CNN (swept with 2 trials, 11 epochs) and ConvNeXt
#: (4 trials, 7 epochs) from random init and ImageNet (the CNN from random init only), the
#: metadata-only model (60 epochs), two fractions, two seeds.
SMALL = {
    "grid": {
        "datasets": ["ztf", "ls"],
        "modalities": ["image", "multimodal"],
        "archs": ["cnn", "convnext"],
        "regimens": ["none", "imagenet"],
        "fractions": [10, 100],
        "seeds": [0, 1],
    },
    "archs": {
        "cnn": {"kind": "cnn", "training": {"epochs": 11, "patience": 4}, "sweep": {"trials": 2}},
        "convnext": {"kind": "timm", "timm_name": "convnext_pico", "input_size": 63},
    },
    "training": {"epochs": 7, "patience": 3},
    "sweep": {"trials": 4},
    "multimodal": {"metadata_training": {"epochs": 60}, "cnn_baseline": "swept"},
}


def _small_workload() -> StudyWorkload:
    return StudyWorkload.from_plan(workload_plan(validate_config(copy.deepcopy(SMALL))), {10: 100, 100: 1000}, "a test")


def test_workload_is_built_from_the_config():
    config = validate_config(copy.deepcopy(SMALL))
    w = _small_workload()
    assert w.archs() == ["cnn", "convnext", "none"]
    # cnn: image 2 datasets x 1 regimen x 2 fractions x 2 seeds + multimodal (ZTF) 1 x 1 x 2 x 2
    assert (w.runs("cnn"), w.runs("convnext"), w.runs("none")) == (8 + 4, 16 + 8, 4)
    assert sum(w.runs(a) for a in w.archs()) == len(list(grid_cells(config)))
    # one study per (dataset, modality, regimen, fraction): cnn 4 + 2 studies x 2 trials, convnext 8 + 4 x 4
    assert (w.sweep_trials("cnn"), w.sweep_trials("convnext"), w.sweep_trials("none")) == (12, 48, 8)
    assert {g.epochs for g in w.of("cnn")} == {11} and {g.patience for g in w.of("cnn")} == {4}
    assert {g.epochs for g in w.of("convnext")} == {7} and {g.epochs for g in w.of("none")} == {60}
    # alerts x epochs: cnn runs 6 per fraction, studies 3 per fraction x 2 trials
    assert w.grid_alerts("cnn") == (6 * 100 + 6 * 1000) * 11
    assert w.sweep_alerts("cnn") == 3 * 2 * (100 + 1000) * 11
    assert w.sweep_alerts("convnext") == 6 * 4 * (100 + 1000) * 7
    # by default Figure 3's multi-modal CNN is BTSbot's production model, not swept: the image studies only
    production = copy.deepcopy(SMALL)
    del production["multimodal"]["cnn_baseline"]
    w_production = StudyWorkload.from_plan(workload_plan(validate_config(production)), {10: 100, 100: 1000}, "a test")
    assert (w_production.sweep_trials("cnn"), w_production.sweep_trials("convnext")) == (4 * 2, 48)
    # the plan follows the config: no sweep, one seed, no multi-modal models
    fewer = copy.deepcopy(SMALL)
    fewer["grid"].update(seeds=[0], modalities=["image"])
    fewer["archs"]["cnn"]["sweep"]["trials"] = 0
    fewer["sweep"]["trials"] = 0
    w = StudyWorkload.from_plan(workload_plan(validate_config(fewer)), {10: 1, 100: 1}, "a test")
    assert (w.runs("cnn"), w.runs("convnext"), w.sweep_trials("convnext")) == (4, 8, 0)
    assert w.archs() == ["cnn", "convnext"]
    with pytest.raises(ValueError, match="fraction"):
        StudyWorkload.from_plan(workload_plan(config), {100: 1000}, "a test")


def test_table_files_have_every_column_and_name_the_device(tmp_path):
    paths = [tmp_path / f"table2.{ext}" for ext in ("csv", "md", "tex")]
    tp.write_table2(_rows(), [_training()], *paths, workload=_small_workload())
    csv = pd.read_csv(paths[0])
    assert list(csv.columns) == list(tp.Row.__dataclass_fields__) and len(csv) == 2
    assert list(csv["alerts_timed"]) == [1024, 1024] and set(csv["scope"]) == {"test split cycled to 1,024"}
    assert set(csv["mode"]) == {"paper", "production"} and (csv["device"] == "NVIDIA H100 80GB HBM3").all()
    md = paths[1].read_text()
    header = md.splitlines()[2]
    for _, title, _ in tp.TABLE_COLUMNS:
        assert title in header
    assert "NVIDIA H100 80GB HBM3" in md and "9,000.0" in md and "9.00" in md
    assert "| Alerts timed | Scope |" in header and "| 1,024 | test split cycled to 1,024 |" in md
    assert "whole test split, each alert once per trial" in md  # the note explains the scope
    assert "Compute of the full study" in md and "GPU-hours in float32 eager" in md
    tex = paths[2].read_text()
    assert tex.startswith("\\begin{tabular}") and tex.rstrip().endswith("\\end{tabular}")
    assert "convnext\\_pico" in tex and tex.count("\\\\") == 3 and "Peak memory (MB)" in tex
    assert "Alerts timed & Scope" in tex and "test split cycled to 1,024" in tex
    tp.write_table2(_rows(), [_training()], None, paths[1])  # no workload: the table without the estimate
    assert "Compute" not in paths[1].read_text()


def test_compute_estimate_arithmetic():
    w = _small_workload()
    hours = study_hours([_training(naive=100.0, production=400.0), _training("cnn", "cnn", 50.0, 50.0)], w)
    timm, cnn = hours.iloc[0], hours.iloc[1]
    grid, sweeps = (12 * 100 + 12 * 1000) * 7, 6 * 4 * 1100 * 7  # 92,400 + 184,800 alert steps
    assert timm["alert_steps"] == grid + sweeps and (timm["runs"], timm["sweep_trials"]) == (24, 48)
    assert timm["hours_naive"] == pytest.approx((grid + sweeps) / 100 / 3600)
    assert timm["hours_production"] == pytest.approx((grid + sweeps) / 400 / 3600)
    assert timm["sweep_hours_naive"] == pytest.approx(sweeps / 100 / 3600)
    assert (cnn["runs"], cnn["sweep_trials"], cnn["epochs"], cnn["patience"]) == (12, 12, "11", "4")
    assert cnn["alert_steps"] == 2 * 72_600 and cnn["hours_naive"] == pytest.approx(2 * 72_600 / 50 / 3600)
    text = format_estimate(hours, w)
    assert "Total: " in text and f"{((grid + sweeps) / 100 + 2 * 72_600 / 50) / 3600:,.1f} GPU-hours" in text
    # the assumptions come from the workload, not from fixed numbers
    assert "10%: 100; 100%: 1,000) from a test" in text
    assert (
        "- cnn, image: datasets ztf, ls; regimens none; fractions 10%, 100%; 2 seeds (0, 1): 8 runs of up to "
        "11 epochs (patience 4); sweeps: 4 studies x 2 trials = 8 trials"
    ) in text
    assert "- convnext, multimodal: datasets ztf; regimens none, imagenet;" in text
    assert "none (4 runs, 8 sweep trials)" in text  # the metadata-only model: no rate measured
    assert "upper bound" in text and "162,000" not in text


def test_training_alerts_are_counted_as_the_split_tables_select_them(tmp_path):
    from alertvision.data.sources import ingest_ztf
    from alertvision.data.splits import split_table

    config = validate_config({**copy.deepcopy(SMALL), "data": {"synthetic": {"n_sources": 60}}})
    ingest_ztf(config, tmp_path / "ztf", progress=False)
    cfg = {**config["splits"], "max_alerts_per_source": 3}
    alerts = tmp_path / "ztf" / "alerts.parquet"
    w = StudyWorkload.from_dataset(workload_plan(config), alerts, cfg)
    table = pd.read_parquet(alerts)
    for fraction in (10, 100):
        assert w.train_alerts[fraction] == (split_table(table, fraction, cfg)["split"] == "train").sum()
    assert 0 < w.train_alerts[10] < w.train_alerts[100] < (table["split"] == "train").sum()  # the cap bites
    assert "cap of 3 alerts per source" in w.counted_from and str(alerts) in w.counted_from


def test_the_rule_step_on_a_tiny_dataset(tmp_path):
    from alertvision.data.sources import ingest_ztf

    config = validate_config({"data": {"synthetic": {"n_sources": 40}}, "grid": {"datasets": ["ztf"]}})
    ingest_ztf(config, tmp_path / "ztf", progress=False)
    arch_cfg, training = config["archs"]["cnn"], {**training_params(config, "cnn"), "batch_size": 8}
    torch.manual_seed(0)
    model = build_model(arch_cfg, training)
    save_model(model, tmp_path / "model.pt", spec=arch_cfg, head_cfg=training, info={"arch": "cnn"})
    bench = {
        **config["benchmark"],
        "trials": 1,
        "min_alerts": None,
        "train_steps": 1,
        "train_warmup": 0,
        "production": {**config["benchmark"]["production"], "cpu_batch_size": 32},
    }
    out = tp.benchmark_run(
        tmp_path / "model.pt",
        tmp_path / "ztf",
        tmp_path / "table2" / "cnn.json",
        arch="cnn",
        model_spec=arch_cfg,
        benchmark_cfg=bench,
        training_cfg=training,
        devices=[CPU],
    )
    saved = json.loads((tmp_path / "table2" / "cnn.json").read_text())
    assert saved["rows"] == out["rows"] and [r["mode"] for r in saved["rows"]] == ["paper", "production"]
    assert "test split" in saved["inputs"] and saved["model_info"] == {"arch": "cnn"}
    n_test = int((pd.read_parquet(tmp_path / "ztf" / "alerts.parquet")["split"] == "test").sum())
    assert saved["test_alerts"] == n_test  # min_alerts None: the whole test split, once per trial
    assert [(r["alerts_timed"], r["scope"]) for r in saved["rows"]] == [(n_test, "test split")] * 2
    assert saved["training"]["naive_alerts_per_s"] > 0 and saved["training"]["batch_size"] == 8
    assert all(r["within_tolerance"] for r in saved["rows"])
    workload = StudyWorkload.from_dataset(workload_plan(config), tmp_path / "ztf" / "alerts.parquet", config["splits"])
    df = tp.table2(
        [tmp_path / "table2" / "cnn.json"], tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.tex", workload
    )
    md = (tmp_path / "t.md").read_text()
    assert len(df) == 2 and "| cnn |" in md and "CPU-hours" in md
    assert f"100%: {workload.train_alerts[100]:,})" in md and "ztf/alerts.parquet" in md


def test_the_benchmark_script_uses_the_configured_architectures():
    spec = importlib.util.spec_from_file_location("table2_script", REPO / "benchmarks" / "table2.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    config = load_config(REPO / "config" / "config.yaml")
    for name, arch in script.ARCHS.items():
        assert {k: config["archs"][name][k] for k in arch} == arch
        assert script.TRAIN_BATCH[name] == training_params(config, name)["batch_size"]
        assert script.HEADS[name] == {k: training_params(config, name)[k] for k in script.HEADS[name]}
    # without a config, the estimate's workload is an explicit assumption, and says so
    w = script.assumed_workload(script.parse_args(["--epochs", "10", "--sweep-trials", "3"]), ["cnn", "maxvit"])
    assert (w.runs("cnn"), w.runs("maxvit")) == (3 * 4 * 5, 3 * 3 * 4 * 5)  # (ztf, ls, multimodal) x regimens
    assert w.sweep_trials("maxvit") == 3 * 3 * 4 * 3 and w.train_alerts[100] == 162_000
    assert (
        w.sweep_trials("cnn") == 2 * 4 * 3
    )  # the image CNN's studies: the multi-modal one is BTSbot's production model
    assert "ASSUMPTION" in w.counted_from
