"""The outlier report: outliers.csv, the page of cards and its images, checked in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alertvision.config import validate_config
from alertvision.data.contract import open_dataset
from alertvision.reports.gallery import build_outlier_report, ls_rgb, robust_stretch

IFOREST = {"n_estimators": 50, "seed": 0, "top_fraction": 0.01}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str | None:
    """The path of a Chromium binary, if one is installed."""
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """A tiny synthetic ZTF dataset and its Legacy Survey pair (some sources uncovered)."""
    from alertvision.data.sources import ingest_ls, ingest_ztf

    config = validate_config({"data": {"synthetic": {"n_sources": 40}}, "grid": {"datasets": ["ztf", "ls"]}})
    root = tmp_path_factory.mktemp("gallery")
    ingest_ztf(config, root / "ztf", progress=False)
    ingest_ls(config, root / "ztf", root / "ls", progress=False)
    return {"ztf": root / "ztf", "ls": root / "ls"}


def _umap_files(ztf_dir: Path, out: Path, outliers: dict[str, list[int]], seed: int = 0) -> dict[str, Path]:
    """One UMAP table per model over every alert of the dataset: a tight cluster, with the given
    alerts (by row) moved far out, so that the Isolation Forest flags exactly those."""
    alerts = open_dataset(ztf_dir).alerts
    rng = np.random.default_rng(seed)
    files = {}
    for name, rows in outliers.items():
        coords = alerts[["alert_id", "objectId", "candid", "source_set", "label"]].copy()
        coords["score"] = rng.uniform(size=len(coords)).astype(np.float32)
        coords["umap_x"], coords["umap_y"] = rng.normal(size=len(coords)), rng.normal(size=len(coords))
        coords.loc[coords.index[rows], ["umap_x", "umap_y"]] = 50.0
        files[name] = out / f"{name}.parquet"
        coords.to_parquet(files[name], index=False)
    return files


def _one_row_per_subset(ztf_dir: Path, nth: int = 0) -> list[int]:
    """The row of the ``nth`` alert of each subset."""
    alerts = open_dataset(ztf_dir).alerts
    return [int(np.flatnonzero(alerts["source_set"].to_numpy() == s)[nth]) for s in sorted(set(alerts["source_set"]))]


class _Links(HTMLParser):
    """Every src and href of a page, and its external scripts and style sheets."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href") and v is not None]


def _dump_dom(page: Path, profile: Path) -> str:
    exe = chromium()
    if exe is None:
        pytest.skip("no Chromium binary found (install it: apt-get install -y chromium)")
    out = subprocess.run(
        [
            exe,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.fixture(scope="module")
def report(datasets, tmp_path_factory) -> dict:
    """A report of two models that agree on one outlier per subset and each flag one more."""
    tmp = tmp_path_factory.mktemp("report")
    shared = _one_row_per_subset(datasets["ztf"])
    files = _umap_files(datasets["ztf"], tmp, {"maxvit_none": shared, "maxvit_imagenet": shared})
    out = tmp / "outliers"
    summary = build_outlier_report(
        files,
        datasets["ztf"],
        out,
        IFOREST,
        ls_dir=datasets["ls"],
        titles={"maxvit_none": "MaxViT (no pre-training)", "maxvit_imagenet": "MaxViT (ImageNet)"},
    )
    return {"summary": summary, "out": out, "shared": shared, "tmp": tmp}


def test_outliers_csv_lists_the_flagged_alerts_with_each_models_scores(report, datasets):
    table = pd.read_csv(report["out"] / "outliers.csv")
    alerts = open_dataset(datasets["ztf"]).alerts
    assert list(table.columns[:5]) == ["objectId", "candid", "alert_id", "subset", "label"]
    for model in ("maxvit_none", "maxvit_imagenet"):
        assert {f"{model}_anomaly", f"{model}_rank", f"{model}_flagged", f"{model}_classifier_score"} <= set(table)
    assert set(table["alert_id"]) == set(alerts["alert_id"].iloc[report["shared"]])
    assert (table["flagged_by"] == 2).all() and table["in_intersection"].all()
    assert report["summary"]["n_cards"] == len(report["shared"]) and not report["summary"]["shows_union"]


def test_page_links_only_files_that_exist_and_nothing_external(report):
    page = report["out"] / "index.html"
    text = page.read_text()
    parser = _Links()
    parser.feed(text)
    assert parser.links, "the page links no image"
    for link in parser.links:
        assert not re.match(r"^[a-z]+:", link) and not link.startswith("/"), f"not a relative link: {link}"
        assert (page.parent / link).is_file(), f"{link} is missing"
    assert "SYNTHETIC DATA" in text
    pngs = sorted(p.name for p in (report["out"] / "img").glob("*.png"))
    assert sorted(Path(link).name for link in parser.links) == pngs  # no stray files either


def test_cards_show_the_legacy_survey_image_when_the_ls_dataset_holds_the_alert(report, datasets):
    ls_ids = set(open_dataset(datasets["ls"]).alerts["alert_id"])
    text = (report["out"] / "index.html").read_text()
    for card in re.findall(r'<article class="card".*?</article>', text, flags=re.S):
        alert_id = int(re.search(r'data-alert-id="(\d+)"', card).group(1))
        assert (f"img/{alert_id}_ls.png" in card) == (alert_id in ls_ids)
        assert f"img/{alert_id}_science.png" in card and f"img/{alert_id}_difference.png" in card
        assert "magpsf" in card and "peakmag_so_far" in card


def test_page_loads_in_headless_chromium_with_every_card_and_image(report):
    dom = _dump_dom(report["out"] / "index.html", report["tmp"] / "chromium-profile")
    assert dom.count('<article class="card"') == len(report["shared"])
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-images-ok="true"' in body, body
    assert 'data-images-broken="0"' in body
    n_images = int(re.search(r'data-images-total="(\d+)"', body).group(1))
    assert n_images == len(re.findall(r"<img ", dom)) >= 3 * len(report["shared"])


def test_chromium_check_catches_a_missing_image(report, tmp_path):
    page_dir = tmp_path / "copy"
    shutil.copytree(report["out"], page_dir)
    next((page_dir / "img").glob("*_science.png")).unlink()
    dom = _dump_dom(page_dir / "index.html", tmp_path / "chromium-profile")
    assert 'data-images-ok="false"' in re.search(r"<body[^>]*>", dom).group(0)


def test_an_empty_intersection_shows_the_union_and_says_so(datasets, tmp_path):
    files = _umap_files(
        datasets["ztf"],
        tmp_path,
        {"m1": _one_row_per_subset(datasets["ztf"], 0), "m2": _one_row_per_subset(datasets["ztf"], 1)},
    )
    out = tmp_path / "outliers"
    (out / "img").mkdir(parents=True)
    (out / "img" / "stale.png").write_bytes(b"old")
    summary = build_outlier_report(files, datasets["ztf"], out, IFOREST, ls_dir=None)
    table = pd.read_csv(out / "outliers.csv")
    text = (out / "index.html").read_text()
    assert summary["shows_union"] and summary["n_intersection"] == 0
    assert summary["n_cards"] == len(table) == text.count('<article class="card"') > 0
    assert 'id="note"' in text and "union" in text
    assert "_ls.png" not in text and "no Legacy Survey dataset" in text
    assert not (out / "img" / "stale.png").exists()


def test_robust_stretch_maps_to_the_unit_interval():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(63, 63))
    image[0, 0], image[1, 1] = 1e6, np.nan
    y = robust_stretch(image)
    assert y.dtype == np.float32 and y.min() >= 0 and y.max() <= 1 and y[1, 1] == 0
    assert np.median(y) > 0.1  # one hot pixel does not crush the rest
    assert not robust_stretch(np.ones((5, 5))).any() and not robust_stretch(np.full((5, 5), np.nan)).any()
    assert ls_rgb(rng.normal(size=(3, 63, 63))).shape == (63, 63, 3)


def test_ls_rgb_puts_z_red_r_green_g_blue_whatever_the_stored_order():
    rng = np.random.default_rng(1)
    g, r, z = (rng.normal(size=(63, 63)) + k for k in range(3))
    expected = np.stack([robust_stretch(x, lower=1.0, upper=99.7, asinh=8.0) for x in (z, r, g)], axis=-1)
    np.testing.assert_array_equal(ls_rgb(np.stack([z, r, g])), expected)  # the default: z, r, g
    np.testing.assert_array_equal(ls_rgb(np.stack([g, r, z]), ["g", "r", "z"]), expected)
    np.testing.assert_array_equal(ls_rgb(np.stack([z, r, g]), ["R=z", "G=r", "B=g"]), expected)  # JPEG
