"""The study plan: the one place that spells where a study's files live."""

from __future__ import annotations

import re
from pathlib import Path

from alertvision.study.plan import LAYOUT, RUN_FIELDS, Layout, Run, grid_runs, largest_run

SRC = Path(__file__).resolve().parents[2] / "src" / "alertvision"


def test_a_pattern_filled_with_a_run_is_the_run_s_path():
    run = Run("ztf", "multimodal", "convnext", "imagenet", "2.5", 3)
    assert LAYOUT.run_dir(run) == "results/runs/ztf/multimodal/convnext/imagenet/f2.5/s3"
    assert LAYOUT.run_file("model.pt").format(**run.values()) == LAYOUT.run_file("model.pt", run)
    assert LAYOUT.sweep_dir().format(**run.configuration) == LAYOUT.sweep_dir(run)
    assert LAYOUT.sweep_dir(run) == "results/sweeps/ztf/multimodal/convnext/imagenet/f2.5"
    assert LAYOUT.split_file().format(dataset="ls", fraction="10") == LAYOUT.split_file("ls", "10")
    assert re.findall(r"{(\w+)}", LAYOUT.run_dir()) == list(RUN_FIELDS)
    assert Layout(results="out").run_dir(run).startswith("out/runs/")


def test_runs_come_from_wildcards_and_enumerate_the_grid(tiny_config):
    assert Run.from_values(
        {"dataset": "ls", "modality": "image", "arch": "cnn", "regimen": "none", "fraction": "50", "seed": "2"}
    ) == Run("ls", "image", "cnn", "none", "50", 2)
    runs = list(grid_runs(tiny_config))
    grid = tiny_config["grid"]
    assert (
        len(runs)
        == len(set(runs))
        == (len(grid["datasets"]) * len(grid["archs"]) * len(grid["fractions"]) * len(grid["seeds"]))
    )
    assert largest_run(tiny_config, "maxvit", "none", "ls") == Run("ls", "image", "maxvit", "none", "100", 0)


def test_only_the_plan_spells_the_results_layout():
    spelled = [
        f"{path.relative_to(SRC)}:{n}"
        for path in SRC.rglob("*.py")
        if path.name != "plan.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bresults/", line)
    ]
    assert spelled == []
