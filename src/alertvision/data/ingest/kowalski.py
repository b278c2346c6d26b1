"""``data.source: kowalski``: compile the BTS training set as BTSbot does, from Fritz and Kowalski.

The sources are the BTS sample explorer's CSV exports (``bts.trues``, ``bts.dims``, ``bts.vars``;
label 1 for trues, 0 otherwise) and the rejects: Fritz candidates that passed the filter but
were saved to none of ``rejects.group_ids`` (label 0), minus any object of the BTS lists. The
BTS sources' saved times come from Fritz (``saved_jd``). Every source's alerts come from
Kowalski's ``ZTF_alerts``, its detection history from ``ZTF_alerts_aux``.

Each answer is written to ``cache_dir`` (gzipped JSON, atomically) as soon as it arrives, so a
rerun after a crash or Ctrl-C asks only for what is not cached yet, and a rerun after a
complete fetch asks nothing. The dataset is then built from the cache alone
(:func:`alertvision.data.ingest.packets.write_packet_dataset`), sources in objectId order and alerts
in candid order, so that two runs over the same cache write the same files.

Credentials come from the environment only (``KOWALSKI_TOKEN``, or ``KOWALSKI_USERNAME`` and
``KOWALSKI_PASSWORD``; ``FRITZ_TOKEN``); they are never cached, logged or written.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import gzip
import hashlib
import json
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from alertvision.atomic import atomic_path, check_writable, write_json
from alertvision.data.contract import MANIFEST_FILE, config_digest
from alertvision.data.features import Cuts
from alertvision.data.ingest.http import REDACTED, AuthError, HttpError, JsonClient, Redactor
from alertvision.data.ingest.labels import check_labels, resolve_listings
from alertvision.data.ingest.packets import Skip, write_packet_dataset

log = logging.getLogger(__name__)

KOWALSKI_TOKEN_ENV = "KOWALSKI_TOKEN"
KOWALSKI_USERNAME_ENV = "KOWALSKI_USERNAME"
KOWALSKI_PASSWORD_ENV = "KOWALSKI_PASSWORD"
FRITZ_TOKEN_ENV = "FRITZ_TOKEN"
KOWALSKI_HINT = f"{KOWALSKI_TOKEN_ENV} (or {KOWALSKI_USERNAME_ENV} and {KOWALSKI_PASSWORD_ENV})"

BTS_SUBSETS = ("trues", "dims", "vars")
REJECTS = "rejects"
#: ID columns of a BTS sample explorer export, in order of preference.
ID_COLUMNS = ("ZTFID", "objectId")
#: The explorer's classification column, and the values BTSbot drops (compile_ZTFIDs.py).
TYPE_COLUMN = "type"
DUPLICATE_TYPES = ("duplicate", "duplicate?")
OBJECT_ID = re.compile(r"^ZTF\d{2}[a-z]{7}$")
ALERTS_CATALOG = "ZTF_alerts"
AUX_CATALOG = "ZTF_alerts_aux"
ALERT_PROJECTION = {
    "_id": 0,
    "objectId": 1,
    "candid": 1,
    "candidate": 1,
    "cutoutScience": 1,
    "cutoutTemplate": 1,
    "cutoutDifference": 1,
    "classifications": 1,
}
AUX_PROJECTION = {"_id": 0, "prv_candidates": 1}
UNIX_EPOCH_JD = 2440587.5
#: Sources named in the manifest where a list of them is given (the rest are counted).
NAME_FIRST = 20


class KowalskiInputError(ValueError):
    """A missing or unusable input of the kowalski source: the message names the config key."""


class CredentialsError(KowalskiInputError):
    """A credential missing from the environment: the message names the variable to set."""


# --------------------------------------------------------------------------- source lists


def _valid_ids(ids: Iterable[Any], origin: str) -> list[str]:
    """Stripped, de-duplicated ZTF objectIds; anything else is dropped with a warning."""
    out: dict[str, None] = {}
    bad: list[str] = []
    for raw in ids:
        oid = "" if raw is None or (isinstance(raw, float) and math.isnan(raw)) else str(raw).strip()
        if OBJECT_ID.match(oid):
            out[oid] = None
        elif oid:
            bad.append(oid)
    if bad:
        log.warning(
            "%s: %d entr%s not a ZTF objectId, dropped: %s",
            origin,
            len(bad),
            "y is" if len(bad) == 1 else "ies are",
            ", ".join(bad[:5]),
        )
    return list(out)


def read_bts_list(path: str | os.PathLike, key: str) -> tuple[list[str], int]:
    """The objectIds of a BTS sample explorer CSV export (column ZTFID, or objectId); ``key`` names it.

    Rows the explorer's ``type`` column marks ``duplicate`` or ``duplicate?`` are dropped, as BTSbot
    drops them; returns the ids and how many rows were dropped so.
    """
    path = Path(path)
    if not path.is_file():
        raise KowalskiInputError(f"BTS list {path} not found (config key {key})")
    df = pd.read_csv(path, dtype=str, skipinitialspace=True)
    df.columns = [str(c).strip() for c in df.columns]
    column = next((c for c in ID_COLUMNS if c in df.columns), None)
    if column is None:
        raise KowalskiInputError(
            f"BTS list {path} (config key {key}) has no {' or '.join(ID_COLUMNS)} column; "
            f"columns: {', '.join(df.columns)}"
        )
    duplicate = pd.Series(False, index=df.index)
    if TYPE_COLUMN in df.columns:
        duplicate = df[TYPE_COLUMN].fillna("").str.strip().str.lower().isin(DUPLICATE_TYPES)
        if duplicate.any():
            log.info("%s: %d row(s) of type duplicate / duplicate? dropped", path, int(duplicate.sum()))
    return _valid_ids(df.loc[~duplicate, column], str(path)), int(duplicate.sum())


def bts_sources(cfg: Mapping[str, Any], report: dict[str, Any] | None = None) -> pd.DataFrame:
    """The BTS sources as (objectId, label, source_set): label 1 for trues, 0 for dims and vars.

    An object in several lists keeps the first of trues, vars, dims (BTSbot's precedence); ``report``
    (when given) receives the explorer duplicates dropped per list and the objects resolved so."""
    frames, dropped = [], {}
    for subset in BTS_SUBSETS:
        path = cfg["bts"].get(subset)
        key = f"data.kowalski.bts.{subset}"
        if not path:
            if subset == "trues":
                raise KowalskiInputError(
                    f"data.source 'kowalski' needs {key}: a CSV export of the BTS sample explorer (column ZTFID)"
                )
            continue
        ids, dropped[subset] = read_bts_list(path, key)
        frames.append(pd.DataFrame({"objectId": ids, "label": int(subset == "trues"), "source_set": subset}))
    df, resolved = resolve_listings(pd.concat(frames, ignore_index=True), "BTS lists")
    if resolved["in_several_subsets"]:
        log.warning(
            "%d object(s) are in more than one BTS list; each kept in the first of trues > vars > dims, e.g. %s",
            resolved["in_several_subsets"],
            "; ".join(resolved["in_several_subsets_first"][:5]),
        )
    if report is not None:
        report.update(explorer_duplicates_dropped=dropped, **resolved)
    return df


def cap_sources(ids: Sequence[str], max_sources: int | None) -> list[str]:
    """At most ``max_sources`` of ``ids``, a pseudo-random but fixed choice (by a hash of each id)."""
    if max_sources is None or len(ids) <= max_sources:
        return sorted(ids)
    ranked = sorted(ids, key=lambda oid: hashlib.blake2b(oid.encode(), digest_size=8).digest())
    return sorted(ranked[:max_sources])


# --------------------------------------------------------------------------- extended JSON


def _binary(value: Mapping[str, Any]) -> bytes:
    """The bytes of a bson extended-JSON ``$binary`` (canonical or legacy form)."""
    payload = value["$binary"]
    text = payload.get("base64") if isinstance(payload, Mapping) else payload
    if not isinstance(text, str):
        raise TypeError("a $binary value without base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64 in $binary: {exc}") from None


_NUMBERS = {"$numberLong": int, "$numberInt": int, "$numberDouble": float}


def decode_extended_json(obj: Any) -> Any:
    """``obj`` with bson extended-JSON wrappers ($binary, $numberLong, ...) turned into Python values."""
    if isinstance(obj, list):
        return [decode_extended_json(v) for v in obj]
    if not isinstance(obj, Mapping):
        return obj
    if "$binary" in obj and set(obj) <= {"$binary", "$type"}:
        return _binary(obj)
    if len(obj) == 1:
        ((key, value),) = obj.items()
        if key in _NUMBERS:
            return _NUMBERS[key](value)
        if key == "$oid":
            return str(value)
    return {k: decode_extended_json(v) for k, v in obj.items()}


def stamp_bytes(cutout: Any) -> Any:
    """A cutout with its ``stampData`` as bytes (it may arrive as a plain base64 string)."""
    if isinstance(cutout, Mapping) and isinstance(cutout.get("stampData"), str):
        try:
            return {**cutout, "stampData": base64.b64decode(cutout["stampData"], validate=True)}
        except binascii.Error as exc:
            raise ValueError(f"bad base64 stampData: {exc}") from None
    return cutout


def packet_from_document(doc: Mapping[str, Any], prv_candidates: list | None) -> dict[str, Any]:
    """A Kowalski alert document as a ZTF packet dict, with the source's detection history attached."""
    packet = decode_extended_json(doc)
    for name in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
        if name in packet:
            packet[name] = stamp_bytes(packet[name])
    packet["prv_candidates"] = prv_candidates or []
    return packet


def iso_to_jd(text: str) -> float:
    """The Julian date of an ISO time (naive times are UTC, as Fritz writes them)."""
    when = dt.datetime.fromisoformat(text.strip())
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return UNIX_EPOCH_JD + when.timestamp() / 86400.0


def earliest_saved_jd(groups: Iterable[Mapping[str, Any]], group_ids: Sequence[int]) -> float:
    """The JD a source was first saved, to ``group_ids`` when given (NaN when never)."""
    wanted = set(group_ids)
    jds = []
    for group in groups:
        if wanted and group.get("id") not in wanted:
            continue
        saved = group.get("saved_at")
        if saved:
            try:
                jds.append(iso_to_jd(str(saved)))
            except ValueError:
                log.warning("unreadable saved_at %r of group %s", saved, group.get("id"))
    return min(jds) if jds else math.nan


# --------------------------------------------------------------------------- cache


class QueryCache:
    """Query answers as gzipped JSON files under one folder, written atomically when they arrive."""

    def __init__(self, root: str | os.PathLike, redactor: Redactor):
        self.root = Path(root)
        self.redact = redactor
        self.hits = 0
        self.stored = 0
        self._lock = threading.Lock()

    def path(self, kind: str, key: str) -> Path:
        """The file of one answer, e.g. ``alerts/ZTF20aaelulu.json.gz``."""
        return self.root / kind / f"{key}.json.gz"

    def has(self, kind: str, key: str) -> bool:
        """Whether an answer is cached."""
        return self.path(kind, key).is_file()

    def load(self, kind: str, key: str) -> Any:
        """A cached answer, or None; an unreadable file (a crash mid-way cannot make one) counts as absent."""
        path = self.path(kind, key)
        if not path.is_file():
            return None
        try:
            obj = json.loads(gzip.decompress(path.read_bytes()))
        except (OSError, ValueError, EOFError) as exc:
            log.warning("cache file %s is unreadable (%s); asking again", path, type(exc).__name__)
            return None
        with self._lock:
            self.hits += 1
        return obj

    def store(self, kind: str, key: str, obj: Any) -> None:
        """Cache an answer (any known secret in it is blanked first)."""
        text = json.dumps(obj, separators=(",", ":"))
        for secret in self.redact.secrets:
            text = text.replace(secret, REDACTED)
        with atomic_path(self.path(kind, key), suffix=".gz") as tmp:
            tmp.write_bytes(gzip.compress(text.encode(), mtime=0))
        with self._lock:
            self.stored += 1


# --------------------------------------------------------------------------- credentials


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


class FritzCredentials:
    """``Authorization: token <FRITZ_TOKEN>``."""

    hint = FRITZ_TOKEN_ENV

    def __init__(self, redactor: Redactor):
        self.redact = redactor
        self.env_used: list[str] = []

    def check(self) -> None:
        """Raise :class:`CredentialsError` when the token is not in the environment."""
        if _env(FRITZ_TOKEN_ENV) is None:
            raise CredentialsError(
                f"set the environment variable {FRITZ_TOKEN_ENV} to a Fritz API token "
                "(needed for the rejects and the saved times of data.source 'kowalski')"
            )

    def __call__(self, client: JsonClient) -> str:
        self.check()
        token = _env(FRITZ_TOKEN_ENV)
        self.redact.add(token)
        self.env_used = [FRITZ_TOKEN_ENV]
        return f"token {token}"


class KowalskiCredentials:
    """``Authorization: Bearer <token>``: KOWALSKI_TOKEN, or a token got once from ``/api/auth``."""

    hint = KOWALSKI_HINT

    def __init__(self, redactor: Redactor):
        self.redact = redactor
        self.env_used: list[str] = []
        self._header: str | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise :class:`CredentialsError` when neither a token nor a username and password are set."""
        if _env(KOWALSKI_TOKEN_ENV) is None and (
            _env(KOWALSKI_USERNAME_ENV) is None or _env(KOWALSKI_PASSWORD_ENV) is None
        ):
            raise CredentialsError(
                f"set the environment variable {KOWALSKI_TOKEN_ENV} to a Kowalski token, or "
                f"{KOWALSKI_USERNAME_ENV} and {KOWALSKI_PASSWORD_ENV} "
                "(needed for the alerts of data.source 'kowalski')"
            )

    def __call__(self, client: JsonClient) -> str:
        with self._lock:
            if self._header is None:
                self._header = f"Bearer {self._token(client)}"
            return self._header

    def _token(self, client: JsonClient) -> str:
        self.check()
        token = _env(KOWALSKI_TOKEN_ENV)
        if token is not None:
            self.redact.add(token)
            self.env_used = [KOWALSKI_TOKEN_ENV]
            return token
        username, password = _env(KOWALSKI_USERNAME_ENV), _env(KOWALSKI_PASSWORD_ENV)
        self.redact.add(password)
        answer = client.post("/api/auth", {"username": username, "password": password}, authenticate=False)
        token = answer.get("token") if isinstance(answer, Mapping) else None
        if not isinstance(token, str) or not token:
            raise AuthError(
                f"Kowalski /api/auth gave no token ({client.redact(_message(answer))}); "
                f"check {KOWALSKI_USERNAME_ENV} and {KOWALSKI_PASSWORD_ENV}"
            )
        self.redact.add(token)
        self.env_used = [KOWALSKI_USERNAME_ENV, KOWALSKI_PASSWORD_ENV]
        log.info("logged in to Kowalski with %s / %s", KOWALSKI_USERNAME_ENV, KOWALSKI_PASSWORD_ENV)
        return token


def _message(answer: Any) -> str:
    if isinstance(answer, Mapping):
        return str(answer.get("message") or answer.get("status") or "no message")
    return type(answer).__name__


# --------------------------------------------------------------------------- service clients


def _client(cfg: Mapping[str, Any], url_key: str, service: str, credentials: Any, redactor: Redactor) -> JsonClient:
    return JsonClient(
        cfg[url_key],
        service,
        timeout_s=cfg["timeout_s"],
        retries=cfg["retries"],
        backoff_s=cfg["backoff_s"],
        rate_per_s=cfg["rate_per_s"],
        redactor=redactor,
        credentials=credentials,
        credential_hint=credentials.hint,
        pool_size=cfg["concurrency"],
    )


def kowalski_find(
    client: JsonClient, catalog: str, flt: Mapping[str, Any], projection: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The documents of a Kowalski ``find`` query."""
    query = {"query_type": "find", "query": {"catalog": catalog, "filter": flt, "projection": projection}}
    answer = client.post("/api/queries", query)
    if not isinstance(answer, Mapping) or answer.get("status") != "success":
        raise HttpError(f"Kowalski find on {catalog} failed: {client.redact(_message(answer))}")
    data = answer.get("data")
    if not isinstance(data, list):
        raise HttpError(f"Kowalski find on {catalog}: 'data' is {type(data).__name__}, expected a list")
    return data


def _fritz_data(answer: Any, what: str, client: JsonClient) -> Mapping[str, Any]:
    if (
        not isinstance(answer, Mapping)
        or answer.get("status") != "success"
        or not isinstance(answer.get("data"), Mapping)
    ):
        raise HttpError(f"Fritz {what} failed: {client.redact(_message(answer))}")
    return answer["data"]


# --------------------------------------------------------------------------- the fetcher


@dataclass
class KowalskiFetch:
    """What :func:`fetch_kowalski` gathered: the labels table (with saved_jd) and the statistics."""

    labels: pd.DataFrame
    cache_dir: Path
    stats: dict[str, Any] = field(default_factory=dict)


class Fetcher:
    """Fill the cache: rejects from Fritz, saved times from Fritz, alerts and history from Kowalski."""

    def __init__(self, cfg: Mapping[str, Any], progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        self.redact = Redactor()
        for name in (KOWALSKI_TOKEN_ENV, KOWALSKI_PASSWORD_ENV, FRITZ_TOKEN_ENV):
            self.redact.add(_env(name))  # blanked wherever they show up, used or not
        check_writable(cfg["cache_dir"], "Kowalski and Fritz answers (data.kowalski.cache_dir)")
        self.cache = QueryCache(cfg["cache_dir"], self.redact)
        self.kowalski_auth = KowalskiCredentials(self.redact)
        self.fritz_auth = FritzCredentials(self.redact)
        self.kowalski = _client(cfg, "kowalski_url", "Kowalski", self.kowalski_auth, self.redact)
        self.fritz = _client(cfg, "fritz_url", "Fritz", self.fritz_auth, self.redact)
        self.rejects_info: dict[str, Any] = {}

    # ---- Fritz: rejects

    def _candidates_params(self) -> dict[str, Any]:
        rejects = self.cfg["rejects"]
        if not rejects["group_ids"]:
            raise KowalskiInputError(
                "data.kowalski.rejects.group_ids is empty: rejects are candidates saved to none "
                "of these Fritz groups; list them, or set rejects.enabled: false"
            )
        params = {
            "savedStatus": "notSavedToAnySelected",
            "groupIDs": ",".join(str(g) for g in rejects["group_ids"]),
            "numPerPage": int(self.cfg["page_size"]),
        }
        for key, name in (("startDate", "start_date"), ("endDate", "end_date")):
            if rejects.get(name):
                params[key] = str(rejects[name])
        return params

    def _candidates_page(self, params: Mapping[str, Any], key: str, page: int) -> dict[str, Any]:
        """One page of Fritz candidates as {ids, totalMatches}, from the cache or the server."""
        cached = self.cache.load("fritz_candidates", f"{key}/page_{page:05d}")
        if cached is not None:
            return cached
        answer = self.fritz.get("/api/candidates", {**params, "pageNumber": page})
        data = _fritz_data(answer, f"candidates page {page}", self.fritz)
        try:
            result = {
                "ids": [str(c["id"]) for c in data.get("candidates") or []],
                "totalMatches": int(data["totalMatches"]),
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise HttpError(f"Fritz candidates page {page}: unexpected answer ({type(exc).__name__}: {exc})") from None
        self.cache.store("fritz_candidates", f"{key}/page_{page:05d}", result)
        return result

    def reject_candidates(self) -> list[str]:
        """Every candidate Fritz lists as saved to none of the groups, paged until all are seen."""
        params = self._candidates_params()
        key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
        ids: list[str] = []
        page, total = 1, None
        bar = tqdm(desc="Fritz candidate pages", unit="page", disable=not self.progress)
        while total is None or len(ids) < total:
            result = self._candidates_page(params, key, page)
            total = result["totalMatches"]
            if not result["ids"]:
                break
            ids.extend(result["ids"])
            page += 1
            bar.update()
        bar.close()
        if total is not None and len(ids) < total:
            log.warning("Fritz listed %d candidates but an empty page came after %d", total, len(ids))
        return ids

    def rejects(self, bts: pd.DataFrame) -> pd.DataFrame:
        """The rejects as (objectId, label 0, source_set 'rejects'), without any BTS source."""
        rejects_cfg = self.cfg["rejects"]
        if not rejects_cfg["enabled"]:
            self.rejects_info = {"enabled": False}
            return pd.DataFrame(columns=["objectId", "label", "source_set"])
        candidates = _valid_ids(self.reject_candidates(), "Fritz candidates")
        in_bts = set(bts["objectId"])
        kept = [oid for oid in candidates if oid not in in_bts]
        chosen = cap_sources(kept, rejects_cfg["max_sources"])
        self.rejects_info = {
            "enabled": True,
            "candidates": len(candidates),
            "excluded_bts": len(candidates) - len(kept),
            "kept": len(chosen),
            "max_sources": rejects_cfg["max_sources"],
        }
        log.info(
            "rejects: %d Fritz candidates, %d in the BTS lists, %d kept",
            len(candidates),
            len(candidates) - len(kept),
            len(chosen),
        )
        return pd.DataFrame({"objectId": chosen, "label": 0, "source_set": REJECTS})

    # ---- Fritz: saved times

    def source_groups(self, oid: str) -> list[dict[str, Any]]:
        """The groups a source is saved to (id, name, saved_at), from the cache or Fritz (none if unknown)."""
        cached = self.cache.load("fritz_sources", oid)
        if cached is None:
            answer = self.fritz.get(f"/api/sources/{oid}", missing_ok=True)
            groups = [] if answer is None else _fritz_data(answer, f"source {oid}", self.fritz).get("groups") or []
            cached = {
                "found": answer is not None,
                "groups": [
                    {"id": g.get("id"), "name": g.get("name"), "saved_at": g.get("saved_at")}
                    for g in groups
                    if isinstance(g, Mapping)
                ],
            }
            self.cache.store("fritz_sources", oid, cached)
        return cached["groups"]

    def saved_jds(self, oids: Sequence[str]) -> dict[str, float]:
        """The JD each source was first saved (to rejects.group_ids when given), NaN where unknown."""
        group_ids = self.cfg["rejects"]["group_ids"]
        out: dict[str, float] = {}

        def one(oid: str) -> None:
            out[oid] = earliest_saved_jd(self.source_groups(oid), group_ids)

        _run_parallel(oids, one, self.cfg["concurrency"], "Fritz saved times", self.progress)
        return out

    # ---- Kowalski: alerts and history

    def _alerts_kind(self) -> str:
        """The cache folder of the alerts queries: one per set of program ids, as the query depends on it."""
        return "alerts/programid_" + "_".join(str(p) for p in sorted(set(self.cfg["programids"])))

    def _alerts_query(self, oid: str) -> dict[str, Any]:
        programids = sorted({int(p) for p in self.cfg["programids"]})
        return {
            "catalog": ALERTS_CATALOG,
            "filter": {"objectId": oid, "candidate.programid": {"$in": programids}},
            "projection": ALERT_PROJECTION,
        }

    def _aux_query(self, oid: str) -> dict[str, Any]:
        return {"catalog": AUX_CATALOG, "filter": {"_id": oid}, "projection": AUX_PROJECTION}

    def _query(self, kind: str, oid: str, query: Mapping[str, Any]) -> list:
        """Run (or read back) one Kowalski find query of a source; a new answer is cached at once."""
        cached = self.cache.load(kind, oid)
        if cached is not None and cached.get("query") == query:
            return cached["data"]
        data = kowalski_find(self.kowalski, query["catalog"], query["filter"], query["projection"])
        self.cache.store(kind, oid, {"query": query, "data": data})
        return data

    def _cached(self, kind: str, oid: str) -> list:
        """The cached answer of a source's query (empty where there is none)."""
        cached = self.cache.load(kind, oid)
        return list(cached["data"]) if cached is not None else []

    def source_cached(self, oid: str) -> bool:
        """Whether a source's alerts and, where it has any, its history are cached (mostly a file check)."""
        kind = self._alerts_kind()
        if not self.cache.has(kind, oid):
            return False
        return self.cache.has("aux", oid) or not self._cached(kind, oid)

    def fetch_source(self, oid: str) -> int:
        """Cache a source's alerts and, when it has any, its history; returns its alert count."""
        alerts = self._query(self._alerts_kind(), oid, self._alerts_query(oid))
        if alerts:
            self._query("aux", oid, self._aux_query(oid))
        return len(alerts)

    def fetch_alerts(self, oids: Sequence[str]) -> None:
        """Cache every source's alerts, ``concurrency`` sources at a time."""
        todo = [oid for oid in oids if not self.source_cached(oid)]
        if todo:
            self.kowalski_auth.check()
        log.info("Kowalski: %d of %d sources to fetch (the rest are cached)", len(todo), len(oids))
        _run_parallel(todo, self.fetch_source, self.cfg["concurrency"], "Kowalski sources", self.progress)

    # ---- reading back

    def packets(self, oids: Sequence[str], counts: dict[str, int]) -> Iterator[tuple[str, dict[str, Any]] | Skip]:
        """Every cached alert of ``oids`` as (origin, packet); ``counts`` receives alerts per source."""
        for oid in oids:
            alerts = self._cached(self._alerts_kind(), oid)
            counts[oid] = len(alerts)
            aux = self._cached("aux", oid) if alerts else []
            prv = [p for doc in aux for p in (decode_extended_json(doc).get("prv_candidates") or [])]
            for doc in sorted(alerts, key=_candid):
                origin = f"kowalski:{oid}/{_candid(doc)}"
                try:
                    yield origin, packet_from_document(doc, prv)
                except (ValueError, KeyError, TypeError) as exc:
                    yield Skip("bad_document", origin, f"{type(exc).__name__}: {exc}")

    def request_stats(self) -> dict[str, Any]:
        """Requests, retries and failures per service, and the cache's hits and writes."""
        return {
            "kowalski": dict(self.kowalski.stats),
            "fritz": dict(self.fritz.stats),
            "cache": {"dir": str(self.cache.root), "hits": self.cache.hits, "stored": self.cache.stored},
        }

    def close(self) -> None:
        """Close both clients' connections."""
        self.kowalski.close()
        self.fritz.close()


def _candid(doc: Mapping[str, Any]) -> int:
    """An alert document's candid (0 where it has none), to order a source's alerts."""
    try:
        return int(decode_extended_json(doc.get("candid")) or 0)
    except (TypeError, ValueError):
        return 0


def _run_parallel(items: Sequence[str], fn: Callable[[str], Any], concurrency: int, desc: str, progress: bool) -> None:
    """Call ``fn`` on every item with ``concurrency`` threads and a progress bar.

    A source whose request fails for good (:class:`HttpError`) does not stop the others; the
    failures are raised together at the end (what succeeded is cached, so a rerun asks only for
    the rest). A refused credential or any other exception stops at once.
    """
    failures: list[tuple[str, HttpError]] = []
    bar = tqdm(total=len(items), desc=desc, unit="src", disable=not progress or not items, mininterval=1)
    executor = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="kowalski")
    try:
        futures: dict[Future, str] = {executor.submit(fn, item): item for item in items}
        for future in as_completed(futures):
            exc = future.exception()
            if isinstance(exc, HttpError) and not isinstance(exc, AuthError):
                log.warning("%s: %s failed: %s", desc, futures[future], exc)
                failures.append((futures[future], exc))
            elif exc is not None:
                raise exc
            bar.update()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        bar.close()
    if failures:
        names = ", ".join(item for item, _ in failures[:5])
        raise HttpError(
            f"{desc}: {len(failures)} source(s) could not be fetched ({names}); the others are cached, "
            f"rerun to ask again for these. First error: {failures[0][1]}"
        )


# --------------------------------------------------------------------------- entry points


def _labels(bts: pd.DataFrame, rejects: pd.DataFrame, saved: Mapping[str, float]) -> pd.DataFrame:
    labels, _ = check_labels(pd.concat([bts, rejects], ignore_index=True), "Kowalski source lists")
    labels["saved_jd"] = labels["objectId"].map(saved).astype(float)
    return labels.sort_values("objectId", kind="stable").reset_index(drop=True)


def fetch_kowalski(config: Mapping[str, Any], progress: bool = True, fetcher: Fetcher | None = None) -> KowalskiFetch:
    """Fill ``data.kowalski.cache_dir`` with every answer the dataset needs; returns the labels table."""
    cfg = config["data"]["kowalski"]
    lists: dict[str, Any] = {}
    bts = bts_sources(cfg, lists)
    fetcher = fetcher or Fetcher(cfg, progress)
    try:
        if any(not fetcher.source_cached(oid) for oid in bts["objectId"]):
            fetcher.kowalski_auth.check()  # fail before asking Fritz anything
        rejects = fetcher.rejects(bts)
        saved = fetcher.saved_jds(list(bts["objectId"]))
        labels = _labels(bts, rejects, saved)
        fetcher.fetch_alerts(list(labels["objectId"]))
    finally:
        fetcher.close()
    env_used = sorted(set(fetcher.kowalski_auth.env_used) | set(fetcher.fritz_auth.env_used))
    stats = {
        "listed_sources": {s: int((labels["source_set"] == s).sum()) for s in (*BTS_SUBSETS, REJECTS)},
        "lists": lists,
        "rejects": fetcher.rejects_info,
        "requests": fetcher.request_stats(),
        "env_vars_used": env_used,
    }
    return KowalskiFetch(labels, Path(cfg["cache_dir"]), stats)


def ingest_kowalski(config: Mapping[str, Any], out_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Fetch (or read back from the cache) the BTS training set and write its dataset; returns the manifest."""
    cfg = config["data"]["kowalski"]
    cuts = Cuts.from_spec(config["data"].get("cuts"))
    fetcher = Fetcher(cfg, progress)
    fetched = fetch_kowalski(config, progress, fetcher)
    labels = fetched.labels
    oids = list(labels["objectId"])
    counts: dict[str, int] = {}
    manifest = write_packet_dataset(
        out_dir,
        fetcher.packets(oids, counts),
        labels,
        config["splits"],
        source="kowalski",
        digest=config_digest(cfg, config["splits"], cuts.spec()),
        progress=progress,
        history=cfg["history"],
        dims_peak_limit=cfg["dims_peak_limit"],
        cuts=cuts,
        masked_pixels=config["data"]["masked_pixels"],
        extra={"kowalski": fetched.stats},
    )
    empty = sorted(oid for oid in oids if counts.get(oid, 0) == 0)
    manifest["kowalski"]["sources_without_alerts"] = len(empty)
    manifest["kowalski"]["sources_without_alerts_first"] = empty[:NAME_FIRST]
    manifest["kowalski"]["alerts_from_kowalski"] = int(sum(counts.values()))
    write_json(Path(out_dir) / MANIFEST_FILE, manifest)  # the completed manifest, replaced atomically
    if empty:
        log.warning(
            "%d sources have no alert in Kowalski (programids %s), e.g. %s",
            len(empty),
            cfg["programids"],
            ", ".join(empty[:5]),
        )
    return manifest
