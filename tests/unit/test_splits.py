"""Source-level splits, caps and nested training fractions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alertvision.data.splits import allot, assign_source_splits, cap_mask, split_table

CFG = {"seed": 5, "max_alerts_per_source": 3, "latest_subsets": ["vars", "junk"]}


def _alerts(n_sources=200, per_source=5, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_sources):
        subset = ["trues", "dims", "vars", "rejects"][s % 4]
        for k in range(int(rng.integers(1, per_source * 2))):
            rows.append({"objectId": f"S{s:04d}", "source_set": subset, "jd": 100.0 + k + rng.random()})
    df = pd.DataFrame(rows)
    df["alert_id"] = np.arange(len(df))
    return df


def test_allot_is_exact():
    assert list(allot(10, [0.81, 0.09, 0.10])) == [8, 1, 1]
    assert allot(1234, [0.81, 0.09, 0.10]).sum() == 1234


def test_splits_are_per_source_per_subset_and_deterministic():
    df = _alerts()
    split = assign_source_splits(df, [0.81, 0.09, 0.10], seed=1)
    df["split"] = split
    assert (df.groupby("objectId")["split"].nunique() == 1).all()
    for subset, g in df.groupby("source_set"):
        per_source = g.drop_duplicates("objectId")["split"].value_counts()
        assert list(per_source.reindex(["train", "val", "test"]).fillna(0).astype(int)) == list(
            allot(50, [0.81, 0.09, 0.10])
        )
    assert split.equals(
        assign_source_splits(df.sample(frac=1, random_state=3).sort_index(), [0.81, 0.09, 0.10], seed=1)
    )
    assert not split.equals(assign_source_splits(df, [0.81, 0.09, 0.10], seed=2))


def test_caps_random_in_train_latest_for_vars():
    df = _alerts(per_source=8)
    df["split"] = assign_source_splits(df, [0.81, 0.09, 0.10], seed=1)
    keep = cap_mask(df, 3, seed=5, latest_subsets=("vars", "junk"))
    kept = df[keep]
    counts = kept.groupby("objectId").size()
    assert counts.max() <= 3 or (kept.groupby("objectId")["split"].first()[counts > 3] != "train").all()
    # vars keep their latest alerts in every split
    for oid, g in df[df["source_set"] == "vars"].groupby("objectId"):
        expected = set(g.nlargest(3, "jd")["alert_id"])
        assert set(kept.loc[kept["objectId"] == oid, "alert_id"]) == expected
    # non-vars in val/test are not capped
    val = df[(df["split"] != "train") & (df["source_set"] != "vars")]
    assert keep[val.index].all()


def test_fractions_are_nested_and_val_test_whole():
    df = _alerts(n_sources=400)
    df["split"] = assign_source_splits(df, [0.81, 0.09, 0.10], seed=1)
    tables = {f: split_table(df, f, CFG) for f in (5, 10, 50, 100)}
    trains = {f: set(t.loc[t["split"] == "train", "alert_id"]) for f, t in tables.items()}
    assert trains[5] <= trains[10] <= trains[50] <= trains[100]
    n_sources = {f: df.set_index("alert_id").loc[list(trains[f]), "objectId"].nunique() for f in trains}
    full = n_sources[100]
    assert n_sources[10] == pytest.approx(0.10 * full, abs=4)
    assert n_sources[50] == pytest.approx(0.50 * full, abs=4)
    for f in (5, 10, 50):
        for split in ("val", "test"):
            assert set(tables[f].loc[tables[f]["split"] == split, "alert_id"]) == set(
                tables[100].loc[tables[100]["split"] == split, "alert_id"]
            )
    # rows point back at the alerts
    t = tables[50]
    assert (df.loc[t["row"], "alert_id"].to_numpy() == t["alert_id"].to_numpy()).all()
    assert split_table(df, 10, CFG).equals(tables[10])


def test_alert_level_fractions_are_nested_per_subset():
    df = _alerts(n_sources=400)
    df["split"] = assign_source_splits(df, [0.81, 0.09, 0.10], seed=1)
    cfg = {**CFG, "fraction_sampling": "alerts"}
    tables = {f: split_table(df, f, cfg) for f in (5, 10, 50, 100)}
    trains = {f: set(t.loc[t["split"] == "train", "alert_id"]) for f, t in tables.items()}
    assert trains[5] <= trains[10] <= trains[50] <= trains[100]
    assert trains[100] == set(split_table(df, 100, CFG).query("split == 'train'")["alert_id"])
    by_subset = df.set_index("alert_id")["source_set"]
    for subset in ("trues", "dims", "vars", "rejects"):
        full = sum(by_subset[a] == subset for a in trains[100])
        assert sum(by_subset[a] == subset for a in trains[10]) == int(np.ceil(0.10 * full - 1e-9))
    # alert-level sampling splits sources between "in" and "out", source-level never does
    sources = df.set_index("alert_id")["objectId"]
    partial = {sources[a] for a in trains[10]} & {sources[a] for a in trains[100] - trains[10]}
    assert partial
    for split in ("val", "test"):
        assert (tables[10]["split"] == split).sum() == (tables[100]["split"] == split).sum()


def test_btsbot_s_subsample_data_samples_val_and_test_sources_too():
    df = _alerts(n_sources=400)
    df["split"] = assign_source_splits(df, [0.81, 0.09, 0.10], seed=1)
    whole, sampled = split_table(df, 50, CFG), split_table(df, 50, {**CFG, "fraction_eval": "sampled"})
    assert (
        whole.query("split == 'train'")
        .reset_index(drop=True)
        .equals(sampled.query("split == 'train'").reset_index(drop=True))
    )
    for split in ("val", "test"):
        ids_whole = set(whole.loc[whole["split"] == split, "alert_id"])
        ids_sampled = set(sampled.loc[sampled["split"] == split, "alert_id"])
        n_whole = df[df["alert_id"].isin(ids_whole)]["objectId"].nunique()
        n_sampled = df[df["alert_id"].isin(ids_sampled)]["objectId"].nunique()
        assert ids_sampled < ids_whole and n_sampled == pytest.approx(0.5 * n_whole, abs=4)
