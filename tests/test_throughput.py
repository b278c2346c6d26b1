"""Table 2: the production mode stays within tolerance, the tables, the compute estimate, the rule's step.

No timing is asserted: speed claims come from benchmarks/table2.py only.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from alertvision import throughput as tp
from alertvision.config import load_config, training_params, validate_config
from alertvision.models import build_model, save_model

REPO = Path(__file__).resolve().parents[1]
HEAD = {"dense1": 32, "dense2": 8, "dropout": 0.5}
ARCHS = {
    "cnn": {"kind": "cnn", "input_size": 63, "input_scale": 63.0, "conv1_channels": 16, "conv2_channels": 32,
            "conv_kernel": 5, "conv_dropout1": 0.25, "conv_dropout2": 0.25},
    "convnext": {"kind": "timm", "timm_name": "convnext_pico", "input_size": 32, "input_scale": 63.0},
}
CPU = torch.device("cpu")


def small_settings(**overrides) -> tp.BenchSettings:
    base = dict(batch_size=16, trials=1, min_alerts=48, cpu_threads=2, cpu_batch_size=32, train_steps=1,
                train_warmup=0, probe_seconds=0.0)
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
    assert production.alerts_per_trial >= settings.min_alerts
    assert production.alerts_per_trial % production.batch_size == 0
    assert production.setup.startswith(tuple(c.setup for c in report if c.chosen))
    assert sum(c.chosen for c in report) == 1
    assert all(c.rejected is not None for c in report if c.first_batch_dev is not None
               and c.first_batch_dev > settings.tolerance)
    for row in rows:
        assert row.device == tp.cpu_name() and row.threads == 2 and row.alerts_per_s > 0 and row.peak_memory_mb > 0


class Shifted(tp.TorchScorer):
    """Scores off by 0.01 from position ``after`` on."""

    after = 0

    def score(self, images, seq):
        s = super().score(images, seq)
        s[self.after:] += 0.01
        return s


class LateShifted(Shifted):
    after = 16


def test_a_candidate_beyond_tolerance_is_never_chosen(inputs):
    model, settings = _model("cnn"), small_settings()
    seq = tp.alert_sequence(inputs.rows, settings.min_alerts, 16)
    reference = tp.TorchScorer(model, CPU, 16, "reference").score(inputs.images, seq)
    specs = [("shifted", 16, lambda: Shifted(model, CPU, 16, "shifted")),
             ("late", 16, lambda: LateShifted(model, CPU, 16, "late")),
             ("plain", 32, lambda: tp.TorchScorer(model, CPU, 32, "plain"))]
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
    assert tp.max_deviation(np.array([0.5, np.nan]), np.array([0.5, 0.5])) == float("inf")


def _rows() -> list[tp.Row]:
    common = dict(timm_name="convnext_pico", input_size=63, threads=2, peak_memory_mb=512.0, memory="x",
                  within_tolerance=True, alerts_per_trial=1024, trials=3)
    return [tp.Row(arch="convnext", mode=tp.PAPER, device="NVIDIA H100 80GB HBM3", batch_size=32, alerts_per_s=1000.0,
                   speedup=1.0, max_score_dev=0.0, setup="float32 eager, contiguous, batch 32", **common),
            tp.Row(arch="convnext", mode=tp.PRODUCTION, device="NVIDIA H100 80GB HBM3", batch_size=1024,
                   alerts_per_s=9000.0, speedup=9.0, max_score_dev=2e-4,
                   setup="torch.compile, bf16 autocast, channels_last, batch 1024", **common)]


def _training(arch="convnext", kind="timm", naive=100.0, production=200.0) -> dict:
    return {"arch": arch, "kind": kind, "input_size": 63, "device": "NVIDIA H100 80GB HBM3", "device_type": "cuda",
            "naive_alerts_per_s": naive, "production_alerts_per_s": production}


def test_table_files_have_every_column_and_name_the_device(tmp_path):
    paths = [tmp_path / f"table2.{ext}" for ext in ("csv", "md", "tex")]
    tp.write_table2(_rows(), [_training()], *paths)
    csv = pd.read_csv(paths[0])
    assert list(csv.columns) == list(tp.Row.__dataclass_fields__) and len(csv) == 2
    assert set(csv["mode"]) == {"paper", "production"} and (csv["device"] == "NVIDIA H100 80GB HBM3").all()
    md = paths[1].read_text()
    header = md.splitlines()[2]
    for _, title, _ in tp.TABLE_COLUMNS:
        assert title in header
    assert "NVIDIA H100 80GB HBM3" in md and "9,000.0" in md and "9.00" in md
    assert "Compute of the full paper study" in md and "GPU-hours in float32 eager" in md
    tex = paths[2].read_text()
    assert tex.startswith("\\begin{tabular}") and tex.rstrip().endswith("\\end{tabular}")
    assert "convnext\\_pico" in tex and tex.count("\\\\") == 3 and "Peak memory (MB)" in tex


def test_compute_estimate_arithmetic():
    w = tp.StudyWorkload(train_alerts=1000, fractions=(0.5, 1.0), seeds=2, pretrained_regimens=3, cnn_regimens=1,
                         datasets=2, epochs=10, sweep_trials=4, sweep_epochs=5)
    hours = tp.study_hours([_training(naive=100.0, production=400.0), _training("cnn", "cnn", 50.0, 50.0)], w)
    timm, cnn = hours.iloc[0], hours.iloc[1]
    # grid 1000 x 1.5 x 2 seeds x 3 regimens x 2 datasets x 10 epochs; sweeps 1000 x 4 x 5 x 3 x 2
    assert timm["alert_steps"] == 180_000 + 120_000 and timm["runs"] == 2 * 2 * 3 * 2
    assert timm["hours_naive"] == pytest.approx(300_000 / 100 / 3600)
    assert timm["hours_production"] == pytest.approx(300_000 / 400 / 3600)
    assert timm["sweep_trials"] == 4 * 3 * 2 and cnn["sweep_trials"] == 4 * 1 * 2
    assert cnn["alert_steps"] == 60_000 + 40_000 and cnn["hours_naive"] == pytest.approx(100_000 / 50 / 3600)
    default = tp.study_hours([_training(naive=1000.0)]).iloc[0]
    assert default["hours_naive"] == pytest.approx((162_000 * 1.65 * 5 * 3 * 2 * 20 + 162_000 * 60 * 20 * 3 * 2)
                                                   / 1000 / 3600)
    text = tp.format_estimate(hours, w)
    assert "Total: " in text and f"{(300_000 / 100 + 100_000 / 50) / 3600:,.1f} GPU-hours" in text


def test_the_rule_step_on_a_tiny_dataset(tmp_path):
    from alertvision.sources import ingest_ztf

    config = validate_config({"data": {"synthetic": {"n_sources": 40}}, "grid": {"datasets": ["ztf"]}})
    ingest_ztf(config, tmp_path / "ztf", progress=False)
    arch_cfg, training = config["archs"]["cnn"], {**training_params(config, "cnn"), "batch_size": 8}
    torch.manual_seed(0)
    model = build_model(arch_cfg, training)
    save_model(model, tmp_path / "model.pt", arch_cfg=arch_cfg, head_cfg=training, info={"arch": "cnn"})
    bench = {**config["benchmark"], "trials": 1, "min_alerts": 64, "train_steps": 1, "train_warmup": 0,
             "production": {**config["benchmark"]["production"], "cpu_batch_size": 32}}
    out = tp.benchmark_run(tmp_path / "model.pt", tmp_path / "ztf", tmp_path / "table2" / "cnn.json", arch="cnn",
                           arch_cfg=arch_cfg, benchmark_cfg=bench, training_cfg=training, devices=[CPU])
    saved = json.loads((tmp_path / "table2" / "cnn.json").read_text())
    assert saved["rows"] == out["rows"] and [r["mode"] for r in saved["rows"]] == ["paper", "production"]
    assert "test split" in saved["inputs"] and saved["model_info"] == {"arch": "cnn"}
    assert saved["training"]["naive_alerts_per_s"] > 0 and saved["training"]["batch_size"] == 8
    assert all(r["within_tolerance"] for r in saved["rows"])
    df = tp.table2([tmp_path / "table2" / "cnn.json"], tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.tex")
    assert len(df) == 2 and "| cnn |" in (tmp_path / "t.md").read_text()
    assert "CPU-hours" in (tmp_path / "t.md").read_text()


def test_the_benchmark_script_uses_the_configured_architectures():
    spec = importlib.util.spec_from_file_location("table2_script", REPO / "benchmarks" / "table2.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    config = load_config(REPO / "config" / "config.yaml")
    for name, arch in script.ARCHS.items():
        assert {k: config["archs"][name][k] for k in arch} == arch
        assert script.TRAIN_BATCH[name] == training_params(config, name)["batch_size"]
        assert script.HEADS[name] == {k: training_params(config, name)[k] for k in script.HEADS[name]}
