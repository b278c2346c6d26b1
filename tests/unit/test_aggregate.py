"""Aggregation over seeds and Figure 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alertvision.evaluation.aggregate import aggregate_roc_auc, write_roc_auc_table
from alertvision.reports.figures import figure2, figure5


def _write_runs(tmp_path, synthetic=True, datasets=("ztf", "ls")):
    """Made-up image runs; ``synthetic`` True, False or a set of the synthetic datasets."""
    files = []
    rng = np.random.default_rng(0)
    for dataset in datasets:
        for arch, regimens in (("cnn", ["none"]), ("convnext", ["none", "imagenet"]), ("maxvit", ["none"])):
            for regimen in regimens:
                for fraction, n in (("10", 100), ("100", 1000)):
                    for seed, auc in enumerate((0.80, 0.90, 0.85)):
                        m = dict(
                            dataset=dataset,
                            modality="image",
                            arch=arch,
                            regimen=regimen,
                            fraction=fraction,
                            seed=seed,
                            test_roc_auc=auc + 0.01 * rng.random(),
                            test_loss=0.5,
                            n_train_alerts=n + seed,
                            synthetic=dataset in synthetic if isinstance(synthetic, set) else synthetic,
                        )
                        path = tmp_path / f"{dataset}_{arch}_{regimen}_{fraction}_{seed}.json"
                        path.write_text(json.dumps(m))
                        files.append(path)
    return files


def test_median_and_std_over_seeds(tmp_path):
    table = write_roc_auc_table(_write_runs(tmp_path), tmp_path / "roc_auc.csv")
    assert len(table) == 2 * 4 * 2  # datasets x (arch, regimen) pairs x fractions
    row = table[(table.dataset == "ztf") & (table.arch == "cnn") & (table.fraction == 100.0)].iloc[0]
    aucs = [json.loads(p.read_text())["test_roc_auc"] for p in sorted(tmp_path.glob("ztf_cnn_none_100_*.json"))]
    assert row.n_seeds == 3 and row.n_train_alerts == 1001
    assert row.roc_auc_median == pytest.approx(np.median(aucs))
    assert row.roc_auc_std == pytest.approx(np.std(aucs, ddof=1))
    assert pd.read_csv(tmp_path / "roc_auc.csv").shape == table.shape


def test_one_seed_has_no_std(tmp_path):
    metrics = pd.DataFrame(
        [
            dict(
                dataset="ztf",
                modality="image",
                arch="cnn",
                regimen="none",
                fraction=5.0,
                seed=0,
                test_roc_auc=0.7,
                test_loss=0.6,
                n_train_alerts=10,
                synthetic=True,
            )
        ]
    )
    table = aggregate_roc_auc(metrics)
    assert np.isnan(table.loc[0, "roc_auc_std"])


@pytest.mark.parametrize("synthetic", [True, False])
def test_figure2_draws_every_panel_and_labels_synthetic(tmp_path, synthetic):
    table = write_roc_auc_table(_write_runs(tmp_path, synthetic), tmp_path / "roc_auc.csv")
    info = figure2(table, tmp_path / "figure2.pdf")
    assert (tmp_path / "figure2.pdf").read_bytes()[:5] == b"%PDF-"
    assert info["panels"] == [("ztf", "convnext"), ("ztf", "maxvit"), ("ls", "convnext"), ("ls", "maxvit")]
    assert ("SYNTHETIC DATA" in info["title"]) is synthetic
    assert info["lines"][("ztf", "convnext")] == ["CNN baseline", "ConvNeXt, none", "ConvNeXt, imagenet"]


def test_figure2_keeps_the_paper_s_rows_and_figure5_draws_the_new_survey(tmp_path):
    runs = _write_runs(tmp_path, {"lsst", "ls"}, datasets=("lsst", "ztf", "ls"))
    table = write_roc_auc_table(runs, tmp_path / "roc_auc.csv")
    info = figure2(table, tmp_path / "figure2.pdf")
    assert [p[0] for p in info["panels"]] == ["ztf", "ztf", "ls", "ls"]  # Rubin/LSST is Figure 5's
    assert "SYNTHETIC DATA" not in info["title"]  # not all of it is: the synthetic rows say so
    assert info["titles"][("ls", "maxvit")] == "SYNTHETIC Legacy Survey: MaxViT"
    assert info["titles"][("ztf", "convnext")] == "ZTF: ConvNeXt"
    info = figure5(table, tmp_path / "figure5.pdf")
    assert info["panels"] == [("lsst", "convnext"), ("lsst", "maxvit")]
    assert info["title"].startswith("SYNTHETIC DATA - Transfer to Rubin/LSST")
    assert info["lines"][("lsst", "convnext")] == ["CNN baseline", "ConvNeXt, none", "ConvNeXt, imagenet"]
    assert (tmp_path / "figure5.pdf").read_bytes()[:5] == b"%PDF-"
    (tmp_path / "z").mkdir()
    with pytest.raises(ValueError, match="no image runs of lsst"):
        figure5(write_roc_auc_table(_write_runs(tmp_path / "z"), tmp_path / "z.csv"), tmp_path / "none.pdf")


POLICY_NAMES = ("bts_p1", "bts_p2", "prod_p1", "prod_p2")


def _write_multimodal_runs(tmp_path, synthetic=True):
    """Multi-modal runs with made-up trigger-policy results (F1 = 0.5 + seed / 10 + fraction / 1000)."""
    files = []
    for arch, regimens in (
        ("cnn", ["none"]),
        ("convnext", ["none", "galaxyzoo"]),
        ("maxvit", ["none"]),
        ("none", ["none"]),
    ):
        for regimen in regimens:
            for fraction, n in (("10", 100), ("100", 1000)):
                for seed in range(3):
                    f1 = 0.5 + seed / 10 + int(fraction) / 1000
                    bins = [
                        {
                            "lo": 17.0,
                            "hi": 17.25,
                            "n_trues": 2,
                            "n_triggered": seed % 2 + 1,
                            "completeness": (seed % 2 + 1) / 2,
                        },
                        {"lo": 17.25, "hi": 17.5, "n_trues": 0, "n_triggered": 0, "completeness": None},
                    ]
                    policies = {
                        p: {
                            "f1": f1 - (p != "bts_p1") * 0.2,
                            "completeness": 0.8,
                            "purity": None if seed else 0.6,
                            "trigger_delay_days_median": 1.0 + seed,
                            "n_included": 40,
                            "completeness_by_peak_mag": bins,
                        }
                        for p in POLICY_NAMES
                    }
                    m = dict(
                        dataset="ztf",
                        modality="multimodal",
                        arch=arch,
                        regimen=regimen,
                        fraction=fraction,
                        seed=seed,
                        test_roc_auc=0.9,
                        test_loss=0.4,
                        n_train_alerts=n,
                        synthetic=synthetic,
                        policies=policies,
                    )
                    path = tmp_path / f"mm_{arch}_{regimen}_{fraction}_{seed}.json"
                    path.write_text(json.dumps(m))
                    files.append(path)
    return files


def test_f1_table_aggregates_every_policy_over_seeds(tmp_path):
    from alertvision.evaluation.aggregate import read_metrics, write_policy_tables

    table = write_policy_tables(
        read_metrics(_write_multimodal_runs(tmp_path)), tmp_path / "f1.csv", tmp_path / "peak.csv"
    )
    assert len(table) == 5 * 2 * 4  # (arch, regimen) pairs x fractions x policies
    row = table[
        (table.arch == "convnext")
        & (table.regimen == "galaxyzoo")
        & (table.fraction == 100.0)
        & (table.policy == "bts_p1")
    ].iloc[0]
    assert row.n_seeds == 3 and row.f1_median == pytest.approx(0.7) and row.f1_std == pytest.approx(0.1)
    assert row.purity_median == pytest.approx(0.6) and np.isnan(row.purity_std)  # one seed had triggers
    assert row.trigger_delay_days_median == pytest.approx(2.0)
    peak = pd.read_csv(tmp_path / "peak.csv")
    first = peak[(peak.arch == "none") & (peak.fraction == 10.0) & (peak.policy == "bts_p1") & (peak.lo == 17.0)]
    assert first.completeness_median.iloc[0] == pytest.approx(0.5)
    assert peak[peak.lo == 17.25].completeness_median.isna().all()


@pytest.mark.parametrize("synthetic", [True, False])
def test_figure3_one_panel_row_per_policy_with_cnn_and_metadata_only_lines(tmp_path, synthetic):
    from alertvision.evaluation.aggregate import read_metrics, write_policy_tables
    from alertvision.reports.figures import figure3

    table = write_policy_tables(read_metrics(_write_multimodal_runs(tmp_path, synthetic)), tmp_path / "f1.csv")
    info = figure3(table, tmp_path / "figure3.pdf")  # all four policies by default
    assert (tmp_path / "figure3.pdf").read_bytes()[:5] == b"%PDF-"
    assert info["panels"] == [(p, a) for p in POLICY_NAMES for a in ("convnext", "maxvit")]
    for policy in POLICY_NAMES:
        assert info["lines"][(policy, "convnext")] == [
            "CNN baseline (multi-modal)",
            "ConvNeXt, none",
            "ConvNeXt, galaxyzoo",
            "metadata only",
        ]
        assert info["lines"][(policy, "maxvit")] == ["CNN baseline (multi-modal)", "MaxViT, none", "metadata only"]
    title = info["title"]
    assert ("SYNTHETIC DATA" in title) is synthetic
    # the suptitle names BTSbot's production triggers and what every policy needs
    assert "BTSbot production trigger prod_p1: >= 1 alert with score > 0.85 and magpsf < 19" in title
    assert (
        "BTSbot production trigger prod_p2: >= 1 alert with score > 0.85 and magpsf < 19, source seen at "
        "magpsf <= 18.5" in title
    )
    assert "\nbts_p1: >= 2 alerts with score > 0.5 and magpsf < 19" in title
    assert "production trigger bts" not in title
    # one policy, as a string or a list, is one row; the order of a list is the order of the rows
    info = figure3(table, tmp_path / "one.pdf", policies="prod_p2")
    assert info["panels"] == [("prod_p2", "convnext"), ("prod_p2", "maxvit")] and "bts_p1" not in info["title"]
    info = figure3(table, tmp_path / "two.pdf", policies=["prod_p1", "bts_p2"])
    assert [p for p, _ in info["panels"]] == ["prod_p1", "prod_p1", "bts_p2", "bts_p2"]
    with pytest.raises(ValueError, match="policy 'bts_p2'"):
        figure3(table[table["policy"] != "bts_p2"], tmp_path / "x.pdf")
    with pytest.raises(ValueError, match="unknown policies"):
        figure3(table, tmp_path / "x.pdf", policies=["bts_p3"])


def test_policies_are_scored_from_the_predictions_and_the_exclusion_list_leaves_sources_out(tmp_path):
    """The evaluation stage scores the policies (training does not); a user's list (RCFJunk) leaves sources out."""
    from alertvision.evaluation.aggregate import write_f1_tables
    from alertvision.evaluation.policies import evaluate_policies

    run = tmp_path / "run"
    run.mkdir()
    rows = []
    for i, (oid, label, score) in enumerate([("ZTFa", 1, 0.9), ("ZTFb", 1, 0.9), ("ZTFc", 0, 0.9), ("ZTFd", 0, 0.1)]):
        for k in range(2):
            rows.append(
                {
                    "alert_id": 10 * i + k,
                    "objectId": oid,
                    "jd": 100.0 + k,
                    "source_set": "x",
                    "label": label,
                    "magpsf": 18.0,
                    "score": score,
                }
            )
    predictions = pd.DataFrame(rows)
    predictions.to_parquet(run / "predictions.parquet")
    (run / "metrics.json").write_text(
        json.dumps(
            dict(
                dataset="ztf",
                modality="multimodal",
                arch="cnn",
                regimen="none",
                fraction="100",
                seed=0,
                test_roc_auc=0.8,
                test_loss=0.5,
                n_train_alerts=10,
                synthetic=True,
            )
        )
    )
    table = write_f1_tables([run / "metrics.json"], tmp_path / "f1.csv")
    bts = table[table.policy == "bts_p1"].iloc[0]
    assert bts.f1_median == pytest.approx(2 * 2 / (2 * 2 + 1)) == evaluate_policies(predictions)["bts_p1"]["f1"]
    (tmp_path / "rcfjunk.csv").write_text("objectId,reason\nZTFc,junk\n")
    table = write_f1_tables([run / "metrics.json"], tmp_path / "f1.csv", exclude_sources=tmp_path / "rcfjunk.csv")
    bts = table[table.policy == "bts_p1"].iloc[0]
    assert bts.f1_median == pytest.approx(1.0) and bts.n_sources == 3  # the false positive is on the list
    (tmp_path / "rcfjunk.txt").write_text("# RCFJunk\nZTFc\n\nZTFd  # another\n")
    assert evaluate_policies(predictions, ["bts_p1"], {"ZTFc", "ZTFd"})["bts_p1"]["n_excluded_listed"] == 2
    from alertvision.evaluation.policies import read_exclusion_list

    assert read_exclusion_list(tmp_path / "rcfjunk.txt") == {"ZTFc", "ZTFd"}


def test_bootstrap_std_resamples_whole_sources_and_is_seeded():
    from alertvision.evaluation.aggregate import bootstrap_auc_std

    rng = np.random.default_rng(0)
    n = 400
    sources = np.array([f"ZTF{i:04d}" for i in range(n)])
    labels = (np.arange(n) % 2).astype(float)
    scores = labels * 0.6 + rng.random(n)  # an AUC near 0.8
    one = bootstrap_auc_std(labels, scores, sources, 300, seed=1)
    assert one == bootstrap_auc_std(labels, scores, sources, 300, seed=1)
    assert one != bootstrap_auc_std(labels, scores, sources, 300, seed=2)
    # shuffling the rows changes nothing: the draws depend on the sorted source ids
    perm = rng.permutation(n)
    assert one == pytest.approx(bootstrap_auc_std(labels[perm], scores[perm], sources[perm], 300, seed=1), abs=1e-12)
    # a quarter of the sources: about twice the std
    quarter = bootstrap_auc_std(labels[:100], scores[:100], sources[:100], 300, seed=1)
    assert 1.5 < quarter / one < 2.7
    # each source's alerts travel together: ten copies of each alert under one source id are one source,
    # so the std stays that of 400 sources, not of 4000 independent alerts
    copies = bootstrap_auc_std(np.repeat(labels, 10), np.repeat(scores, 10), np.repeat(sources, 10), 300, seed=1)
    assert copies == pytest.approx(one, rel=0.25)
    assert bootstrap_auc_std(labels, labels, sources, 50, seed=0) == 0.0  # a perfect ranking stays perfect


def test_bootstrap_auc_is_sklearn_s_roc_auc_on_each_resample():
    """The rank form the bootstrap uses gives roc_auc_score's value, ties included."""
    from sklearn.metrics import roc_auc_score

    from alertvision.evaluation.aggregate import bootstrap_auc_std

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 60).astype(float)
    scores = np.round(rng.random(60), 1)  # many ties
    sources = np.array([f"S{i:02d}" for i in range(60)])
    draws = np.random.default_rng(9)
    aucs = [roc_auc_score(labels[r], scores[r]) for r in (draws.integers(0, 60, 60) for _ in range(40))]
    expected = np.std(aucs, ddof=1)
    # the same draws: one source per alert, sorted ids equal the row order
    assert bootstrap_auc_std(labels, scores, sources, 40, seed=9) == pytest.approx(expected, abs=1e-12)


def _cnn_metrics(folder: Path, modality: str, seed: int, **values: float) -> Path:
    """A synthetic CNN run's metrics.json (ZTF, no pre-training, 100%) in ``folder``; returns its path."""
    metrics = dict(dataset="ztf", modality=modality, arch="cnn", regimen="none", fraction="100", seed=seed)
    path = folder / "metrics.json"
    path.write_text(json.dumps({**metrics, **values, "synthetic": True}))
    return path


def test_roc_auc_table_carries_the_bootstrap_std_of_each_configuration(tmp_path):
    from alertvision.evaluation.aggregate import bootstrap_auc_std

    rng = np.random.default_rng(3)
    files, stds = [], []
    for seed in range(3):
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        labels = (np.arange(120) % 2).astype(float)
        pred = pd.DataFrame(
            {"objectId": [f"ZTF{i // 2:03d}" for i in range(120)], "label": labels, "score": labels + rng.random(120)}
        )
        pred.to_parquet(folder / "predictions.parquet")
        stds.append(bootstrap_auc_std(labels, pred["score"].to_numpy(), pred["objectId"].to_numpy(), 50, 4))
        files.append(_cnn_metrics(folder, "image", seed, test_roc_auc=0.9, test_loss=0.3, n_train_alerts=500))
    table = write_roc_auc_table(files, tmp_path / "roc_auc.csv", bootstrap={"resamples": 50, "seed": 4})
    row = table.iloc[0]
    assert row.roc_auc_bootstrap_std == pytest.approx(np.median(stds)) and row.n_test_sources == 60
    assert "roc_auc_bootstrap_std" not in write_roc_auc_table(files, tmp_path / "plain.csv").columns


def _policy_predictions(n_sources=40, seed=0):
    """Test predictions of ``n_sources`` sources (a few with one alert, left out of the policies' counts)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_sources):
        label = i % 2
        for k in range(1 if i % 7 == 0 else 3):
            rows.append(
                {
                    "alert_id": 10 * i + k,
                    "objectId": f"ZTF{i:03d}",
                    "jd": 100.0 + k,
                    "label": label,
                    "magpsf": 18.0 + rng.random(),
                    "score": float(np.clip(0.35 * label + rng.random(), 0, 1)),
                }
            )
    return pd.DataFrame(rows)


def test_bootstrap_f1_is_each_resample_s_f1_on_the_draws_of_the_auc():
    """F1's bootstrap draws whole sources as the AUC's does (the same seeded draws over the sorted ids);
    each resample's F1 is what the policy scores on the resampled sources."""
    from alertvision.evaluation.aggregate import bootstrap_draws, bootstrap_f1_std
    from alertvision.evaluation.policies import evaluate_policies, source_decisions

    predictions = _policy_predictions()
    ids, draws = bootstrap_draws(predictions["objectId"].to_numpy(), 30, seed=4)
    assert list(ids) == sorted(predictions["objectId"].unique())
    f1s = []
    for drawn in draws:  # a source drawn twice comes back twice, under a new name
        parts = [
            predictions[predictions.objectId == ids[i]].assign(objectId=f"{ids[i]}#{k}") for k, i in enumerate(drawn)
        ]
        f1s.append(evaluate_policies(pd.concat(parts), ["prod_p1"])["prod_p1"]["f1"])
    expected = np.std([f for f in f1s if np.isfinite(f)], ddof=1)
    got = bootstrap_f1_std(source_decisions(predictions, "prod_p1"), 30, seed=4)
    assert got == pytest.approx(expected, abs=1e-12) and got > 0
    # the row order of the predictions changes nothing
    shuffled = predictions.sample(frac=1.0, random_state=1)
    assert bootstrap_f1_std(source_decisions(shuffled, "prod_p1"), 30, seed=4) == pytest.approx(got, abs=1e-12)


def test_f1_table_carries_the_bootstrap_std_of_f1(tmp_path):
    from alertvision.evaluation.aggregate import bootstrap_f1_std, write_f1_tables
    from alertvision.evaluation.policies import source_decisions

    files, stds = [], []
    for seed in range(3):
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        predictions = _policy_predictions(seed=seed)
        predictions.to_parquet(folder / "predictions.parquet")
        stds.append(bootstrap_f1_std(source_decisions(predictions, "bts_p1"), 40, 2))
        files.append(_cnn_metrics(folder, "multimodal", seed, test_roc_auc=0.8, test_loss=0.5, n_train_alerts=10))
    table = write_f1_tables(files, tmp_path / "f1.csv", bootstrap={"resamples": 40, "seed": 2})
    row = table[table.policy == "bts_p1"].iloc[0]
    assert row.f1_bootstrap_std == pytest.approx(np.median(stds)) and row.f1_bootstrap_std > 0
    assert "f1_bootstrap_std" in pd.read_csv(tmp_path / "f1.csv").columns
    assert "f1_bootstrap_std" not in write_f1_tables(files, tmp_path / "plain.csv").columns


def _one_seed(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The configurations of ``table`` as one seed would give them: no std over seeds, a bootstrap std."""
    return table.assign(n_seeds=1, **{f"{metric}_std": np.nan, f"{metric}_bootstrap_std": 0.02})


def test_figure2_draws_the_bootstrap_band_with_one_seed_and_the_seeds_band_with_several(tmp_path):
    table = write_roc_auc_table(_write_runs(tmp_path), tmp_path / "roc_auc.csv")
    several = figure2(table, tmp_path / "several.pdf")
    # every line has its band, drawn in the axes (PolyCollections), and the title says which band
    assert several["band"] == "roc_auc_std" and "band: one std over seeds" in several["title"]
    assert several["bands"][("ztf", "convnext")] == len(several["lines"][("ztf", "convnext")]) == 3
    one = figure2(_one_seed(table, "roc_auc"), tmp_path / "one.pdf")
    assert one["band"] == "roc_auc_bootstrap_std" and "bootstrap std over the test sources" in one["title"]
    assert all(one["bands"][key] == len(one["lines"][key]) for key in one["panels"])
    bare = figure2(_one_seed(table, "roc_auc").drop(columns="roc_auc_bootstrap_std"), tmp_path / "bare.pdf")
    assert bare["band"] is None and set(bare["bands"].values()) == {0} and "no band" in bare["title"]


def test_figure3_draws_the_bootstrap_band_of_f1_with_one_seed(tmp_path):
    from alertvision.evaluation.aggregate import read_metrics, write_policy_tables
    from alertvision.reports.figures import figure3

    table = write_policy_tables(read_metrics(_write_multimodal_runs(tmp_path)), tmp_path / "f1.csv")
    several = figure3(table, tmp_path / "several.pdf", policies="prod_p1")
    assert several["band"] == "f1_std" and several["bands"][("prod_p1", "convnext")] == 4
    one = figure3(_one_seed(table, "f1"), tmp_path / "one.pdf", policies="prod_p1")
    assert one["band"] == "f1_bootstrap_std" and "bootstrap std over the test sources" in one["title"]
    assert one["bands"][("prod_p1", "convnext")] == len(one["lines"][("prod_p1", "convnext")]) == 4
