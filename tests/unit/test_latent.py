"""Figure 4's pieces: which runs, embeddings per architecture, seeded UMAP and Isolation Forest, the
intersection of the models' outliers, and the figure itself."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# umap-learn compiles with numba on first use (tens of seconds); a cache makes later sessions faster
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / "alertvision-numba-cache"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from alertvision.config import validate_config  # noqa: E402
from alertvision.data.contract import open_dataset  # noqa: E402
from alertvision.evaluation.embeddings import embed_run, embedding_columns  # noqa: E402
from alertvision.evaluation.latent import (
    anomaly_table,
    flagged_by_all,
    flagged_by_any,
    outlier_table,
    top_count,  # noqa: E402
    umap_2d,
    umap_table,
)
from alertvision.models import build_model, save_model  # noqa: E402
from alertvision.study.embedplan import embed_plan  # noqa: E402

IFOREST = {"n_estimators": 50, "seed": 0, "top_fraction": 0.01}
UMAP = {"n_neighbors": 8, "min_dist": 0.1, "seed": 0}


@pytest.fixture(scope="module")
def tiny_ztf(tmp_path_factory) -> Path:
    from alertvision.data.sources import ingest_ztf

    config = validate_config({"data": {"synthetic": {"n_sources": 40}}, "grid": {"datasets": ["ztf"]}})
    out = tmp_path_factory.mktemp("latent") / "ztf"
    ingest_ztf(config, out, progress=False)
    return out


def _blobs(n: int = 60, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5.0, size=(3, d))
    return (centres[rng.integers(0, 3, n)] + rng.normal(size=(n, d))).astype(np.float32)


# --- which runs -----------------------------------------------------------------------------------


def test_plan_takes_the_cnn_and_each_maxvit_regimen_at_the_largest_fraction_first_seed():
    config = validate_config(
        {
            "grid": {
                "archs": ["cnn", "convnext", "maxvit"],
                "regimens": ["none", "imagenet"],
                "fractions": [5, 100, 50],
                "seeds": [3, 1],
            }
        }
    )
    plan = embed_plan(config)
    assert [(r.arch, r.regimen) for r in plan.figure_runs] == [
        ("cnn", "none"),
        ("maxvit", "none"),
        ("maxvit", "imagenet"),
    ]
    assert [r.name for r in plan.outlier_runs] == ["maxvit_none", "maxvit_imagenet"]
    assert plan.note is None
    assert plan.figure_runs[0].model_path == "results/runs/ztf/image/cnn/none/f100/s3/model.pt"
    assert plan.outlier_runs[1].umap_path == "results/embeddings/ztf/maxvit/imagenet/umap.parquet"


def test_plan_without_a_maxvit_uses_another_architecture_and_says_so():
    config = validate_config({"grid": {"archs": ["cnn", "convnext"], "regimens": ["none"]}})
    plan = embed_plan(config)
    assert plan.focus_arch == "convnext"
    assert [r.title for r in plan.figure_runs] == ["CNN", "ConvNeXt (no pre-training)"]
    assert "no MaxViT" in plan.note


# --- embeddings ---------------------------------------------------------------------------------------

ARCHS = {
    "cnn": (
        {
            "kind": "cnn",
            "input_size": 63,
            "conv1_channels": 4,
            "conv2_channels": 8,
            "conv_kernel": 5,
            "conv_dropout1": 0.25,
            "conv_dropout2": 0.25,
            "input_scale": 63.0,
        },
        16,
    ),
    "timm": ({"kind": "timm", "timm_name": "test_convnext", "input_size": 63, "input_scale": 63.0}, 12),
}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_embeddings_have_the_head_width_and_the_models_scores(arch, tiny_ztf, tmp_path):
    arch_cfg, dense2 = ARCHS[arch]
    head = {"dense1": 32, "dense2": dense2, "dropout": 0.5}
    torch.manual_seed(0)
    model = build_model(arch_cfg, head)
    save_model(model, tmp_path / "model.pt", spec=arch_cfg, head_cfg=head, info={"arch": arch})
    table = embed_run(tmp_path / "model.pt", tiny_ztf, tmp_path / "embeddings.parquet", batch_size=4, progress=False)

    data = open_dataset(tiny_ztf)
    test = data.alerts[data.alerts["split"] == "test"]
    assert embedding_columns(table) == [f"emb_{i}" for i in range(dense2)]
    assert table["alert_id"].tolist() == test["alert_id"].tolist()
    assert table["source_set"].tolist() == test["source_set"].tolist()
    assert {"objectId", "candid", "label", "score"} <= set(table.columns)
    assert pd.read_parquet(tmp_path / "embeddings.parquet").equals(table)
    # the scores are the model's own (eval mode: dropout off)
    model.eval()
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(np.asarray(data.images[test.index.to_numpy()])))).numpy()
    np.testing.assert_allclose(table["score"].to_numpy(), expected, rtol=1e-4, atol=1e-5)


# --- UMAP and Isolation Forest ------------------------------------------------------------------------


def test_umap_is_deterministic_under_its_seed():
    x = _blobs()
    first, second = umap_2d(x, n_neighbors=10, seed=4), umap_2d(x, n_neighbors=10, seed=4)
    assert first.shape == (60, 2) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, umap_2d(x, n_neighbors=10, seed=5))


def test_umap_table_keeps_the_identifiers_and_copes_with_tiny_inputs():
    x = _blobs(n=12)
    emb = pd.DataFrame(x, columns=[f"emb_{i}" for i in range(x.shape[1])])
    emb.insert(0, "alert_id", np.arange(12))
    emb.insert(1, "source_set", ["trues", "dims"] * 6)
    table = umap_table(emb, UMAP)
    assert list(table.columns) == ["alert_id", "source_set", "umap_x", "umap_y"]
    assert umap_2d(x[:4], n_neighbors=15).shape == (4, 2)  # random initialisation below 5 points
    np.testing.assert_array_equal(umap_2d(x[:2]), [[0, 0], [1, 0]])


def _coords(n_per_subset: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    subsets = ["trues", "dims", "vars"]
    n = n_per_subset * len(subsets)
    return pd.DataFrame(
        {
            "alert_id": np.arange(n) + 100,
            "objectId": [f"ZTF{i:04d}" for i in range(n)],
            "candid": np.arange(n) + 10**12,
            "source_set": np.repeat(subsets, n_per_subset),
            "label": np.repeat([1, 0, 0], n_per_subset),
            "score": rng.uniform(size=n),
            "umap_x": rng.normal(size=n),
            "umap_y": rng.normal(size=n),
        }
    )


def test_isolation_forest_is_deterministic_and_flags_the_top_fraction_per_subset():
    coords = _coords()
    cfg = {**IFOREST, "top_fraction": 0.1}
    first, second = anomaly_table(coords, cfg), anomaly_table(coords, cfg)
    pd.testing.assert_frame_equal(first, second)
    assert (first.groupby("source_set")["flagged"].sum() == 3).all()  # ceil(0.1 * 30)
    assert (first.groupby("source_set")["rank"].apply(sorted).map(list) == [list(range(1, 31))] * 3).all()
    flagged_min = first[first["flagged"]].groupby("source_set")["anomaly"].min()
    unflagged_max = first[~first["flagged"]].groupby("source_set")["anomaly"].max()
    assert (flagged_min >= unflagged_max).all()
    other = anomaly_table(coords, {**IFOREST, "seed": 1})
    assert not np.array_equal(other["anomaly"].to_numpy(), first["anomaly"].to_numpy())


def test_top_count_is_at_least_one():
    assert [top_count(n, 0.01) for n in (0, 1, 30, 100, 101, 250)] == [0, 1, 1, 1, 2, 3]
    assert top_count(10, 0.25) == 3 and top_count(4, 1.0) == 4


def test_the_intersection_is_what_every_model_flags():
    assert flagged_by_all({"a": {1, 2, 3}, "b": {2, 3}, "c": {3, 4}}) == {3}
    assert flagged_by_any({"a": {1}, "b": {2}}) == {1, 2}
    assert flagged_by_all({}) == set()

    # one alert per subset is flagged (top_fraction 0.01 of 30): move chosen alerts far out
    base = _coords()
    far = {
        "m1": {"trues": 100, "dims": 130, "vars": 160},  # alert ids of the trues, dims, vars outliers
        "m2": {"trues": 100, "dims": 130, "vars": 161},
        "m3": {"trues": 100, "dims": 131, "vars": 162},
    }
    models = {}
    for name, outliers in far.items():
        coords = base.copy()
        coords.loc[coords["alert_id"].isin(outliers.values()), ["umap_x", "umap_y"]] = 40.0
        models[name] = coords
    table = outlier_table(models, IFOREST)
    by_id = table.set_index("alert_id")
    assert set(table.loc[table["in_intersection"], "alert_id"]) == {100}
    assert by_id["flagged_by"].to_dict() == {100: 3, 130: 2, 131: 1, 160: 1, 161: 1, 162: 1}
    assert table["alert_id"].iloc[0] == 100 and table["alert_id"].iloc[1] == 130  # most often flagged first
    assert list(table.columns[:5]) == ["objectId", "candid", "alert_id", "subset", "label"]
    assert {f"{m}_{c}" for m in far for c in ("anomaly", "rank", "flagged", "classifier_score")} <= set(table.columns)
    assert (by_id.loc[100, ["m1_rank", "m2_rank", "m3_rank"]] == 1).all()


# --- the figure ---------------------------------------------------------------------------------------


def test_figure4_draws_a_panel_per_model_and_says_synthetic(tmp_path):
    from alertvision.reports.figure4 import figure4, subset_order

    coords = _coords(10)
    coords.loc[coords.index[:3], "source_set"] = "rejects"
    drawn = figure4(
        [("CNN", coords), ("MaxViT (no pre-training)", coords)],
        tmp_path / "figure4.pdf",
        dataset="ztf",
        synthetic=True,
        note="the grid has no MaxViT: ConvNeXt stands in for it",
    )
    assert (tmp_path / "figure4.pdf").read_bytes().startswith(b"%PDF")
    assert drawn["title"].startswith("SYNTHETIC DATA")
    assert "ConvNeXt stands in" in drawn["title"]
    assert drawn["panels"] == ["CNN", "MaxViT (no pre-training)"]
    assert list(drawn["counts"]["CNN"]) == ["trues", "dims", "vars", "rejects"]
    assert sum(drawn["counts"]["CNN"].values()) == len(coords)
    assert subset_order(["junk", "vars", "trues"]) == ["trues", "vars", "junk"]
    real = figure4([("CNN", coords)], tmp_path / "real.pdf", dataset="ls", synthetic=False)
    assert "SYNTHETIC" not in real["title"] and "Legacy Survey" in real["title"]
