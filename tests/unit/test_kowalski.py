"""data.source 'kowalski': the BTS training set compiled from a local fake Kowalski and Fritz."""

from __future__ import annotations

import gzip
import logging
import math
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kowalski_server import FakeServices, encode_stamp

from alertvision.config import ConfigError, validate_config
from alertvision.data.contract import open_dataset
from alertvision.data.ingest.http import AuthError, HttpError, JsonClient, RateLimiter, Redactor
from alertvision.data.ingest.kowalski import (
    CredentialsError,
    KowalskiInputError,
    cap_sources,
    decode_extended_json,
    earliest_saved_jd,
    fetch_kowalski,
    ingest_kowalski,
    iso_to_jd,
    packet_from_document,
)
from alertvision.data.triplet import triplet_from_alert
from alertvision.logs import FORMAT

KOWALSKI_TOKEN = "kw-tok-9f8e7d6c5b4a39281706"
FRITZ_TOKEN = "fritz-tok-0a1b2c3d4e5f60718293"
USERNAME, PASSWORD = "btsbot", "pw-5e6f7a8b9c0d1e2f"
RCF, OTHER = 41, 99
RCF_SAVED = "2020-02-05T00:00:00"
ENV_VARS = ("KOWALSKI_TOKEN", "KOWALSKI_USERNAME", "KOWALSKI_PASSWORD", "FRITZ_TOKEN")
EXPLORER_COLUMNS = ["ZTFID", "IAUID", "RA", "Dec", "peakt", "peakfilt", "peakmag", "type", "redshift"]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def lists(packets) -> dict[str, list[str]]:
    """The 11 real objects spread over the subsets, plus Fritz candidates (2 in BTS, 1 without alerts)."""
    oids = sorted({p["objectId"] for p in packets})
    assert len(oids) == 11
    trues = ["ZTF20aajcdad"] + [o for o in oids if o != "ZTF20aajcdad"][:3]  # ZTF20aajcdad has 2 alerts
    rest = [o for o in oids if o not in trues]
    dims, vars_, rejects = rest[:3], rest[3:5], rest[5:]
    candidates = [rejects[0], trues[1], "ZTF21aaaaaaa", dims[0], rejects[1]]
    return {
        "trues": trues,
        "dims": dims,
        "vars": vars_,
        "rejects": rejects + ["ZTF21aaaaaaa"],
        "candidates": candidates,
        "all": oids,
    }


@pytest.fixture
def env(monkeypatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KOWALSKI_TOKEN", KOWALSKI_TOKEN)
    monkeypatch.setenv("FRITZ_TOKEN", FRITZ_TOKEN)


@pytest.fixture
def services(packets, lists):
    """The fake services; every BTS source but the last vars one is on Fritz, saved to RCF and another group."""
    bts = lists["trues"] + lists["dims"] + lists["vars"][:-1]
    groups = {
        oid: [
            {"id": OTHER, "name": "Other", "saved_at": "2020-01-01T00:00:00"},
            {"id": RCF, "name": "RCF", "saved_at": RCF_SAVED},
        ]
        for oid in bts
    }
    with FakeServices(
        packets,
        kowalski_token=KOWALSKI_TOKEN,
        fritz_token=FRITZ_TOKEN,
        username=USERNAME,
        password=PASSWORD,
        candidates=lists["candidates"],
        fritz_sources=groups,
    ) as fake:
        yield fake


def write_explorer_csv(path: Path, ids: list[str], id_column: str = "ZTFID") -> Path:
    """A BTS sample explorer export of ``ids`` (with the explorer's other columns)."""
    rows = [
        {
            "ZTFID": f" {oid} ",
            "IAUID": f"SN 2020a{i}",
            "RA": "10:00:00.00",
            "Dec": "+20:00:00.0",
            "peakt": 58880.5 + i,
            "peakfilt": "r",
            "peakmag": 18.2,
            "type": "SN Ia",
            "redshift": "-",
        }
        for i, oid in enumerate(ids)
    ]
    df = pd.DataFrame(rows, columns=EXPLORER_COLUMNS).rename(columns={"ZTFID": id_column})
    df.to_csv(path, index=False)
    return path


def make_config(tmp_path: Path, services: FakeServices, lists: dict, **kowalski) -> dict:
    """A validated config for the fake services, with small timeouts and no backoff."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    csv = {
        s: str(write_explorer_csv(tmp_path / f"{s}.csv", lists[s], "objectId" if s == "vars" else "ZTFID"))
        for s in ("trues", "dims", "vars")
    }
    block = {
        "kowalski_url": services.url,
        "fritz_url": services.url,
        "bts": csv,
        "rejects": {"enabled": True, "group_ids": [RCF], "start_date": "2020-01-01", "end_date": "2020-03-01"},
        "cache_dir": str(tmp_path / "cache"),
        "concurrency": 3,
        "rate_per_s": 500.0,
        "timeout_s": 0.5,
        "retries": 3,
        "backoff_s": 0.0,
        "page_size": 2,
    }
    block.update(kowalski)
    return dict(
        validate_config(
            {
                "data": {"source": "kowalski", "kowalski": block},
                "grid": {"datasets": ["ztf"]},
                "splits": {"probabilities": [0.5, 0.25, 0.25], "seed": 2},
            }
        )
    )


def files_text(root: Path) -> str:
    """Every file under ``root`` as text (gzip files decompressed), for secret scans."""
    chunks = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        chunks.append(data.decode("latin1"))
    return "\n".join(chunks)


def expected_alerts(packets, oids) -> Counter:
    return Counter(p["objectId"] for p in packets if p["objectId"] in oids)


# --------------------------------------------------------------------------- the full compile


def test_compiles_every_source_once_despite_faults(tmp_path, env, services, packets, lists):
    services.inject(f"ZTF_alerts:{lists['dims'][1]}", "500")
    services.inject(f"ZTF_alerts_aux:{lists['trues'][2]}", "delay", delay_s=1.0)  # > timeout_s 0.5
    services.inject("candidates:2", "broken")
    services.inject(f"sources:{lists['trues'][0]}", "500", times=2)
    config = make_config(tmp_path, services, lists)
    manifest = ingest_kowalski(config, tmp_path / "ztf", progress=False)
    ds = open_dataset(tmp_path / "ztf")
    alerts = ds.alerts

    # every listed source's alerts, exactly once, but the dims that peaked at or brighter than 18.5 mag
    # (BTSbot's dims cut: ZTF20aaelulu at 14.92 and ZTF20aafsnpp at 18.22; ZTF20aafcnby at 19.2 stays)
    dims_cut = ["ZTF20aaelulu", "ZTF20aafsnpp"]
    assert sorted(set(lists["dims"]) - {"ZTF20aafcnby"}) == dims_cut
    assert manifest["dims_cut"] == {"limit": 18.5, "sources": 2, "alerts": 2} and manifest["history"] == "alerts"
    kept = [o for o in lists["all"] if o not in dims_cut]
    assert len(alerts) == 10 and alerts["objectId"].nunique() == 9
    assert Counter(alerts["objectId"]) == expected_alerts(packets, kept)
    assert sorted(alerts["candid"]) == sorted(p["candid"] for p in packets if p["objectId"] in kept)
    assert alerts["alert_id"].is_unique
    by_candid = {p["candid"]: p for p in packets}
    for i, candid in enumerate(alerts["candid"]):  # images.npy was compacted in step with the table
        np.testing.assert_array_equal(ds.images[i], triplet_from_alert(by_candid[candid]))
    # history "alerts" (BTSbot's): the derived features see the source's own alerts, not prv_candidates
    one = alerts[alerts["objectId"] == "ZTF20aafcnby"].iloc[0]
    assert one["peakmag_so_far"] == pytest.approx(by_candid[one["candid"]]["candidate"]["magpsf"])
    # labels and subsets; rejects exclude the BTS objects Fritz also listed
    subset = alerts.groupby("objectId")["source_set"].first()
    assert sorted(subset[subset == "dims"].index) == ["ZTF20aafcnby"]
    for name in ("trues", "vars"):
        assert sorted(subset[subset == name].index) == sorted(lists[name])
    assert sorted(subset[subset == "rejects"].index) == sorted(lists["rejects"][:2])
    assert (alerts["label"] == (alerts["source_set"] == "trues")).all()
    # saved_jd: the earliest save to the configured group, NaN for rejects and sources not on Fritz
    saved = alerts.groupby("objectId")["saved_jd"].first()
    for oid in lists["trues"] + ["ZTF20aafcnby"] + lists["vars"][:-1]:
        assert saved[oid] == pytest.approx(iso_to_jd(RCF_SAVED))
    assert math.isnan(saved[lists["vars"][-1]]) and saved[lists["rejects"][:2]].isna().all()
    # classifications.braai rides along where Kowalski has it
    braai = {p["candid"]: round(0.5 + i / 100, 4) for i, p in enumerate(packets) if i % 2 == 0}
    got = alerts.set_index("candid")["new_drb"]
    assert all(got[c] == pytest.approx(v) for c, v in braai.items() if c in got.index)
    n_braai = sum(c in got.index for c in braai)
    assert manifest["new_drb_from"] == {"classifications.braai": n_braai, "candidate.drb": 10 - n_braai}

    # each fault was met and overcome by a retry; nothing else was asked twice
    assert services.count(f"ZTF_alerts:{lists['dims'][1]}") == 2
    assert services.count(f"ZTF_alerts_aux:{lists['trues'][2]}") == 2
    assert services.count("candidates:2") == 2
    assert services.count(f"sources:{lists['trues'][0]}") == 3
    assert [services.count(f"candidates:{p}") for p in (1, 3, 4)] == [1, 1, 0]
    assert services.count(f"ZTF_alerts:{lists['dims'][0]}") == 1
    # the manifest tells the story
    kw = manifest["kowalski"]
    assert kw["listed_sources"] == {"trues": 4, "dims": 3, "vars": 2, "rejects": 3}
    assert kw["rejects"] == {"enabled": True, "candidates": 5, "excluded_bts": 2, "kept": 3, "max_sources": None}
    assert kw["sources_without_alerts"] == 1 and kw["sources_without_alerts_first"] == ["ZTF21aaaaaaa"]
    assert kw["requests"]["kowalski"]["retries"] == 2 and kw["requests"]["fritz"]["retries"] == 3
    assert kw["env_vars_used"] == ["FRITZ_TOKEN", "KOWALSKI_TOKEN"]
    assert manifest["labelled_sources_without_alerts"] == 1 and manifest["source"] == "kowalski"
    # an object with no alert is cached too (as an empty answer)
    assert (tmp_path / "cache" / "alerts" / "programid_1_2" / "ZTF21aaaaaaa.json.gz").is_file()


def test_second_run_asks_nothing_and_writes_the_same(tmp_path, env, services, lists):
    config = make_config(tmp_path, services, lists)
    ingest_kowalski(config, tmp_path / "a", progress=False)
    # 3 candidate pages, 9 BTS source records, 12 alert queries, 11 history queries (none for no alerts)
    assert services.total_requests() == 3 + 9 + 12 + 11
    services.reset_counts()
    manifest = ingest_kowalski(config, tmp_path / "b", progress=False)
    assert services.total_requests() == 0
    assert manifest["kowalski"]["requests"]["kowalski"] == {} and manifest["kowalski"]["env_vars_used"] == []
    assert (tmp_path / "a" / "alerts.parquet").read_bytes() == (tmp_path / "b" / "alerts.parquet").read_bytes()
    a, b = open_dataset(tmp_path / "a"), open_dataset(tmp_path / "b")
    pd.testing.assert_frame_equal(a.alerts, b.alerts)
    assert np.array_equal(np.asarray(a.images), np.asarray(b.images), equal_nan=True)


def test_crash_mid_run_then_rerun_asks_only_for_what_is_missing(tmp_path, env, services, lists):
    services.revoke_kowalski(after_alert_queries=4)  # the token stops working after 4 sources
    config = make_config(tmp_path, services, lists, concurrency=1)
    with pytest.raises(AuthError, match="KOWALSKI_TOKEN") as err:
        ingest_kowalski(config, tmp_path / "ztf", progress=False)
    assert KOWALSKI_TOKEN not in "".join(traceback.format_exception(err.value))
    assert not (tmp_path / "ztf" / "manifest.json").exists()
    order = sorted(lists["all"] + ["ZTF21aaaaaaa"])
    cache = tmp_path / "cache"
    assert sorted(p.name.split(".")[0] for p in (cache / "alerts" / "programid_1_2").iterdir()) == order[:4]
    assert sorted(p.name.split(".")[0] for p in (cache / "aux").iterdir()) == order[:3]
    assert not [p for p in cache.rglob("*") if p.name.endswith(".tmp")]

    services.revoke_kowalski(None)
    services.reset_counts()
    ingest_kowalski(config, tmp_path / "ztf", progress=False)
    assert services.count("endpoint:candidates") == services.count("endpoint:sources") == 0
    for oid in order[:4]:
        assert services.count(f"ZTF_alerts:{oid}") == 0
    assert [services.count(f"ZTF_alerts_aux:{oid}") for oid in order[:4]] == [0, 0, 0, 1]
    for oid in order[4:]:
        assert services.count(f"ZTF_alerts:{oid}") == 1
    assert len(open_dataset(tmp_path / "ztf").alerts) == 10  # 12, less two dims cut


def test_interrupt_mid_fetch_leaves_a_resumable_cache(tmp_path, env, services, lists, monkeypatch):
    from alertvision.data.ingest import kowalski

    real_find, calls = kowalski.kowalski_find, Counter()

    def interrupted_find(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real_find(*args, **kwargs)

    monkeypatch.setattr(kowalski, "kowalski_find", interrupted_find)
    config = make_config(tmp_path, services, lists, concurrency=2)
    with pytest.raises(KeyboardInterrupt):
        ingest_kowalski(config, tmp_path / "ztf", progress=False)
    asked = services.count("endpoint:queries")
    monkeypatch.setattr(kowalski, "kowalski_find", real_find)
    services.reset_counts()
    ingest_kowalski(config, tmp_path / "ztf", progress=False)
    assert services.count("endpoint:queries") == 23 - asked  # nothing answered before is asked again
    assert len(open_dataset(tmp_path / "ztf").alerts) == 10  # 12, less two dims cut


def test_a_source_failing_for_good_is_reported_and_fetched_on_rerun(tmp_path, env, services, lists):
    victim = lists["vars"][0]
    services.inject(f"ZTF_alerts:{victim}", "500", times=3)  # retries 2: three tries, all 500
    config = make_config(tmp_path, services, lists, retries=2)
    with pytest.raises(HttpError, match=f"1 source\\(s\\) could not be fetched \\({victim}\\).*rerun"):
        ingest_kowalski(config, tmp_path / "ztf", progress=False)
    services.reset_counts()
    ingest_kowalski(config, tmp_path / "ztf", progress=False)
    assert services.count(f"ZTF_alerts:{victim}") == 1 and services.count("endpoint:queries") == 2


# --------------------------------------------------------------------------- rejects


def test_rejects_cap_and_switch_off(tmp_path, env, services, lists):
    fetched = fetch_kowalski(
        make_config(tmp_path / "a", services, lists, rejects={"enabled": True, "group_ids": [RCF], "max_sources": 2}),
        progress=False,
    )
    rejects = fetched.labels.loc[fetched.labels["source_set"] == "rejects", "objectId"].tolist()
    assert len(rejects) == 2 and set(rejects) <= set(lists["rejects"])
    assert rejects == cap_sources(lists["rejects"], 2)
    assert (fetched.labels.loc[fetched.labels["source_set"] == "rejects", "label"] == 0).all()
    services.reset_counts()
    fetched = fetch_kowalski(make_config(tmp_path / "b", services, lists, rejects={"enabled": False}), progress=False)
    assert services.count("endpoint:candidates") == 0 and "rejects" not in set(fetched.labels["source_set"])


def test_rejects_page_parameters_and_groups_required(tmp_path, env, services, lists):
    fetch_kowalski(make_config(tmp_path / "a", services, lists), progress=False)
    params = [k for k in services.counts if k.startswith("candidates_params:")]
    assert all(
        '"groupIDs": "41"' in k
        and '"savedStatus": "notSavedToAnySelected"' in k
        and '"startDate": "2020-01-01"' in k
        and '"numPerPage": "2"' in k
        for k in params
    )
    assert len(params) == 3
    with pytest.raises(ConfigError, match="rejects.group_ids"):  # the config check stops it first
        make_config(tmp_path / "b", services, lists, rejects={"enabled": True, "group_ids": []})
    config = make_config(tmp_path / "b", services, lists)
    config["data"]["kowalski"]["rejects"]["group_ids"] = []  # and the library refuses it on its own
    with pytest.raises(KowalskiInputError, match="rejects.group_ids"):
        fetch_kowalski(config, progress=False)


# --------------------------------------------------------------------------- credentials and secrets


def test_token_never_written_logged_or_raised(tmp_path, env, services, lists, caplog, monkeypatch):
    monkeypatch.delenv("KOWALSKI_TOKEN")
    monkeypatch.setenv("KOWALSKI_USERNAME", USERNAME)
    monkeypatch.setenv("KOWALSKI_PASSWORD", PASSWORD)
    services.inject(f"ZTF_alerts:{lists['trues'][1]}", "500")
    log_file = tmp_path / "logs" / "ingest.log"
    log_file.parent.mkdir()
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger().addHandler(handler)
    caplog.set_level(logging.DEBUG)
    try:
        manifest = ingest_kowalski(make_config(tmp_path, services, lists), tmp_path / "ztf", progress=False)
        # a wrong Fritz token is refused; the fake server echoes it back in its error body
        monkeypatch.setenv("FRITZ_TOKEN", FRITZ_TOKEN + "-wrong")
        with pytest.raises(AuthError, match="FRITZ_TOKEN") as err:
            fetch_kowalski(make_config(tmp_path / "b", services, lists), progress=False)
        logging.getLogger("alertvision").error("failed: %s", err.value)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert services.count("auth") == 1 and manifest["kowalski"]["env_vars_used"] == [
        "FRITZ_TOKEN",
        "KOWALSKI_PASSWORD",
        "KOWALSKI_USERNAME",
    ]
    secrets = (services.issued_token, PASSWORD, FRITZ_TOKEN, KOWALSKI_TOKEN)
    texts = {
        "exception": "".join(traceback.format_exception(err.value)),
        "caplog": caplog.text,
        "log file": log_file.read_text(),
        "output": files_text(tmp_path / "ztf"),
        "cache": files_text(tmp_path / "cache") + files_text(tmp_path / "b" / "cache"),
    }
    assert "urllib3" in caplog.text and "retrying" in caplog.text  # the scan looked at real records
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into the {where}"


def test_401_stops_without_retry_and_names_the_env_var(tmp_path, env, services, lists, monkeypatch):
    monkeypatch.setenv("KOWALSKI_TOKEN", "not-the-right-token-123456")
    config = make_config(tmp_path, services, lists, concurrency=1)
    with pytest.raises(AuthError) as err:
        ingest_kowalski(config, tmp_path / "ztf", progress=False)
    text = str(err.value)
    assert "HTTP 401" in text and "KOWALSKI_TOKEN" in text and "not-the-right-token-123456" not in text
    assert services.count("endpoint:queries") == 1  # refused once, not retried, nothing else asked


def test_wrong_password_is_refused_without_leaking_it(tmp_path, env, services, lists, monkeypatch):
    monkeypatch.delenv("KOWALSKI_TOKEN")
    monkeypatch.setenv("KOWALSKI_USERNAME", USERNAME)
    monkeypatch.setenv("KOWALSKI_PASSWORD", "wrong-password-42")
    with pytest.raises(AuthError, match="KOWALSKI_USERNAME") as err:
        ingest_kowalski(make_config(tmp_path, services, lists), tmp_path / "ztf", progress=False)
    assert "wrong-password-42" not in str(err.value)
    assert services.count("auth") == 1 and services.count("endpoint:queries") == 0


@pytest.mark.parametrize("unset, named", [(ENV_VARS[:3], "KOWALSKI_TOKEN"), (("FRITZ_TOKEN",), "FRITZ_TOKEN")])
def test_missing_env_var_is_named_before_any_request(tmp_path, env, services, lists, monkeypatch, unset, named):
    for name in unset:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(CredentialsError, match=named):
        ingest_kowalski(make_config(tmp_path, services, lists), tmp_path / "ztf", progress=False)
    assert services.total_requests() == 0


def test_a_read_only_cache_stops_before_any_request_naming_it(tmp_path, env, services, lists, mounted_tmpfs):
    """Before, a read-only cache folder died with a bare OSError from the first answer's write."""
    readonly = mounted_tmpfs("ro", readonly=True)
    config = make_config(tmp_path, services, lists, cache_dir=str(readonly / "kowalski"))
    with pytest.raises(PermissionError, match=f"cannot write Kowalski and Fritz answers .* to {readonly}/kowalski"):
        ingest_kowalski(config, tmp_path / "ztf", progress=False)
    assert services.total_requests() == 0 and not (tmp_path / "ztf").exists()


def test_explorer_duplicates_are_dropped_and_an_object_in_two_lists_keeps_the_first(tmp_path, env, services, lists):
    config = make_config(tmp_path, services, lists, dims_peak_limit=None)
    bts = config["data"]["kowalski"]["bts"]
    trues = pd.read_csv(bts["trues"])
    extra = trues.iloc[[0]].assign(ZTFID=" ZTF20aakyoez ", type="duplicate?")  # a vars object, typed duplicate
    pd.concat([trues, extra], ignore_index=True).to_csv(bts["trues"], index=False)
    dims = pd.read_csv(bts["dims"])
    also = dims.iloc[[0]].assign(ZTFID=lists["vars"][0])  # a vars object in the dims list too
    dup = dims.iloc[[1]].assign(type="duplicate")  # a dims row the explorer marks as a duplicate
    pd.concat([dims.iloc[[0, 2]], also, dup], ignore_index=True).to_csv(bts["dims"], index=False)
    manifest = ingest_kowalski(config, tmp_path / "ztf", progress=False)
    lists_report = manifest["kowalski"]["lists"]
    assert lists_report["explorer_duplicates_dropped"] == {"trues": 1, "dims": 1, "vars": 0}
    assert lists_report["in_several_subsets"] == 1
    assert lists_report["in_several_subsets_first"] == [f"{lists['vars'][0]}: vars > dims"]
    subset = open_dataset(tmp_path / "ztf").alerts.groupby("objectId")["source_set"].first()
    assert subset[lists["vars"][0]] == "vars"
    assert subset["ZTF20aakyoez"] == "rejects"  # its trues row was typed duplicate?: a reject it stays
    assert lists["dims"][1] not in subset.index  # typed duplicate: not a source
    assert manifest["dims_cut"] == {"limit": None, "sources": 0, "alerts": 0}


def test_missing_bts_list_names_the_config_key(tmp_path, env, services, lists):
    config = make_config(tmp_path, services, lists)
    config["data"]["kowalski"]["bts"]["dims"] = str(tmp_path / "nope.csv")
    with pytest.raises(KowalskiInputError, match="data.kowalski.bts.dims"):
        ingest_kowalski(config, tmp_path / "ztf", progress=False)
    config["data"]["kowalski"]["bts"]["trues"] = None
    with pytest.raises(KowalskiInputError, match="data.kowalski.bts.trues"):
        ingest_kowalski(config, tmp_path / "ztf", progress=False)
    assert services.total_requests() == 0


# --------------------------------------------------------------------------- small parts


def test_extended_json_stamps_in_every_form(packets):
    stamp = packets[0]["cutoutScience"]["stampData"]
    for style in range(3):
        doc = {
            "objectId": "ZTF20aaelulu",
            "candid": {"$numberLong": "1105522281015015000"},
            "candidate": {"jd": {"$numberDouble": "2458881.7"}, "fid": {"$numberInt": "1"}},
            "cutoutScience": {"fileName": "x.fits.gz", "stampData": encode_stamp(stamp, style)},
        }
        packet = packet_from_document(doc, [{"jd": 1.0}])
        assert packet["cutoutScience"]["stampData"] == stamp
        assert packet["candid"] == 1105522281015015000 and packet["candidate"] == {"jd": 2458881.7, "fid": 1}
        assert packet["prv_candidates"] == [{"jd": 1.0}]
    with pytest.raises(ValueError, match="base64"):
        decode_extended_json({"$binary": {"base64": "***", "subType": "00"}})


def test_saved_jd_takes_the_earliest_save_to_the_groups():
    groups = [
        {"id": 1, "saved_at": "2021-01-02T00:00:00"},
        {"id": 2, "saved_at": "2021-01-01T12:00:00Z"},
        {"id": 3, "saved_at": None},
    ]
    assert earliest_saved_jd(groups, []) == pytest.approx(2459216.0)
    assert earliest_saved_jd(groups, [1]) == pytest.approx(2459216.5)
    assert math.isnan(earliest_saved_jd(groups, [3]))


def test_rate_limiter_spaces_starts_across_threads():
    """Threads book distinct slots one interval apart; a frozen clock makes it independent of the machine's load."""
    import threading

    slept: list[float] = []
    limiter = RateLimiter(20.0, clock=lambda: 100.0, sleep=slept.append)
    booked: list[float] = []

    def worker() -> None:
        for _ in range(3):
            booked.append(100.0 + limiter.wait())  # the start this caller was given

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(booked) == pytest.approx([100.0 + 0.05 * k for k in range(9)])
    assert sorted(slept) == pytest.approx([0.05 * k for k in range(1, 9)])  # the first caller does not sleep


def test_redactor_blanks_known_secrets_and_token_shapes():
    redact = Redactor()
    redact.add("s3cret-value")
    text = redact('Bearer abcdefgh12345678 token=zyxwvuts9876 {"password": "hunter2"} s3cret-value')
    assert "abcdefgh12345678" not in text and "zyxwvuts9876" not in text and "hunter2" not in text
    assert "s3cret-value" not in text and text.count("[REDACTED]") == 4


def test_client_retries_a_broken_body_and_a_timeout(services):
    services.inject("candidates:1", "broken")
    services.inject("candidates:2", "delay", delay_s=0.6)
    client = JsonClient(
        services.url,
        "Fritz",
        timeout_s=0.3,
        retries=1,
        backoff_s=0,
        rate_per_s=100,
        redactor=Redactor(),
        credentials=lambda c: f"token {services.fritz_token}",
    )
    params = {"savedStatus": "notSavedToAnySelected", "groupIDs": "1", "numPerPage": 2}
    for page in (1, 2):
        assert client.get("/api/candidates", {**params, "pageNumber": page})["status"] == "success"
        assert services.count(f"candidates:{page}") == 2
    services.inject("candidates:3", "broken", times=2)
    with pytest.raises(HttpError, match="gave up after 1 retries"):
        client.get("/api/candidates", {**params, "pageNumber": 3})
    assert client.stats["retries"] == 3 and client.stats["requests"] == 3
