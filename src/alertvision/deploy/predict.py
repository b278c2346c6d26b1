"""Score real alert packets (ZTF; Rubin/LSST through its plugin) with an exported model (``alertvision predict``).

Packets come from .avro files (plain or compressed whole), folders of them (through links), ``.tar``
/ ``.tar.gz`` / ``.tar.bz2`` / ``.tar.xz`` nightly archives (the readers of the ``avro`` source) or
Avro streams on stdin (``-``; several container files one after another are all read). Per alert: the
triplet through :func:`~alertvision.data.triplet.triplet_from_alert` (the pipeline's), the 25 features
from the packet itself (:func:`~alertvision.data.ingest.packets.packet_features`: its
``prv_candidates`` are the history a live broker has), the logit of the exported ``model.onnx`` (or of
a ``model.pt``), its score ``sigmoid(logit)``, the calibrated score (the ONNX file's
``alertvision.calibration``) and, per trigger policy, whether it fires at this alert given the
source's alerts seen so far in this run, in arrival order. As in the study, only alerts that pass
BTSbot's cuts (the settings the model's training data was cut with, ``alertvision.cuts``, else
``data.cuts``' defaults) count towards a policy; an alert that fails them is scored, flagged
``passes_cuts = False`` and counted by reason.

Before the first packet is read the output is proven writable (temporaries of a killed run are
removed), the inputs are listed, and an ONNX model is checked against its contract: one without it
(its metadata stripped), or made for other inputs or another survey, is refused. A model trained on
SYNTHETIC data is scored with a warning on every run, and the ``model_trained_on`` column says so.

Never a NaN score, and no alert twice: a packet that cannot be scored is skipped and counted by reason
(as the ingest counts them), never a crash: a repeat of an alert already read (``duplicate_alert``), a
non-finite jd (``bad_jd``), a feature that is missing or non-finite where the model fills none
(``metadata_fill: error``; ``nonfinite_<feature>``), a stamp that decompresses to more than
:data:`~alertvision.data.triplet.MAX_STAMP_BYTES` (``stamp_too_large``).

ZTF packets are decoded with a reader schema holding only the fields scoring reads
(:func:`~alertvision.surveys.ztf.projected_schema`): the same features, triplets and scores as a full
decode, in about half its time. With ``threads`` > 1 the packets are decoded while the model scores the
batch before on the other threads (:func:`predict`).

Memory stays bounded: at most two batches of triplets are held, a few counters per source and the
(objectId, jd, fid) of each alert read. The output (Parquet or CSV, by its suffix) is written batch by
batch to a temporary file renamed into place at the end.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from alertvision.atomic import atomic_path, check_writable, clean_stale_temporaries
from alertvision.data.features import BTSBOT_CUTS, METADATA_FEATURES, Cuts
from alertvision.data.ingest.avro import AvroInputError, packet_files, read_packet_file, read_stream
from alertvision.data.ingest.packets import (
    BadJd,
    InputReport,
    Skip,
    candidate_row,
    count_skip,
    finite_jd,
    numeric_field,
    packet_features,
)
from alertvision.data.triplet import CHANNELS, StampError, triplet_from_alert
from alertvision.deploy.calibration import Calibration, sigmoid
from alertvision.deploy.export import torch_logits
from alertvision.evaluation.policies import POLICIES, Policy
from alertvision.models import load_model as load_torch_model
from alertvision.models.onnx import METADATA_INPUT, TRIPLET_INPUT, model_inputs
from alertvision.models.runtime import PRODUCTION_BATCH, production_session, score_logits
from alertvision.surveys import get_survey
from alertvision.surveys.base import FeatureError
from alertvision.surveys.lsst.dataset import JD_MINUS_MJD, _decompressed, iter_lsst_packets
from alertvision.surveys.lsst.features import BANDS
from alertvision.surveys.ztf import projected_schema

log = logging.getLogger(__name__)

#: Alerts scored per model call: the production back-end's batch.
BATCH_SIZE = PRODUCTION_BATCH
#: Where the policies' thresholds come from (``--thresholds``).
THRESHOLD_SOURCES = ("policy", "recommended")
ALERT_COLUMNS = ("objectId", "candid", "jd", "fid", "magpsf", "passes_cuts")
SCORE_COLUMNS = ("logit", "score", "calibrated_score")
#: The column saying what the model was trained on: ``real``, ``SYNTHETIC`` or ``unknown`` (a model.pt).
TRAINED_ON_COLUMN = "model_trained_on"


class PredictInputError(ValueError):
    """A model or packet path that cannot be used."""


@dataclass
class ExportedModel:
    """A model to score with: its logit function, the inputs it takes, its calibration and thresholds, whether
    it fills non-finite features itself, what it was trained on, and the cuts of its training data."""

    logits: Callable[[np.ndarray | None, np.ndarray | None], np.ndarray]
    takes_images: bool
    takes_metadata: bool
    calibration: Calibration
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    fills_metadata: bool = False
    trained_on: str = "unknown"  # "real", "SYNTHETIC" or "unknown" (a model.pt carries no contract)
    cuts: Cuts = BTSBOT_CUTS
    masked_pixels: str = "drop"  # the stamp rule of the export's contract (alertvision.stamps)
    survey: str = "ztf"  # the survey whose packets it scores (alertvision.survey)
    plugin: Any = None  # for a survey other than ZTF: its plugin, configured as the training data was


#: The ``metadata_props`` an exported model must carry (see :func:`alertvision.deploy.export.contract`).
CONTRACT_KEYS = (
    "alertvision.inputs",
    "alertvision.input_shapes",
    "alertvision.channels",
    "alertvision.metadata_features",
    "alertvision.metadata_fill",
    "alertvision.calibration",
    "alertvision.thresholds",
    "alertvision.synthetic",
)
#: The survey of the packets when none is named (``--survey``), and of a model whose export records none.
SURVEY = "ZTF"
#: The surveys whose packets predict scores (``--survey``).
SURVEYS = ("ztf", "lsst")


def _contract(meta: Mapping[str, str], path: Path) -> dict[str, Any]:
    """The parsed alertvision contract of an ONNX file's metadata; PredictInputError naming what is wrong."""
    redo = "export the run again with `alertvision export`"
    if not any(key.startswith("alertvision.") for key in meta):
        raise PredictInputError(
            f"{path} carries no alertvision contract (no alertvision.* metadata_props): it is not a model "
            f"`alertvision export` wrote, or its metadata was stripped; without it the inputs, calibration and "
            f"fill of the model are unknown. Give the export folder or {redo}"
        )
    missing = [key for key in CONTRACT_KEYS if key not in meta]
    if missing:
        raise PredictInputError(f"{path}: its contract lacks {', '.join(missing)}; {redo}")
    parsed: dict[str, Any] = {}
    for key, value in meta.items():
        if key.startswith("alertvision."):
            try:
                parsed[key] = json.loads(value)
            except json.JSONDecodeError:
                parsed[key] = value  # plain strings (layout, descriptions)
    return parsed


def _plugin(contract: Mapping[str, Any], survey: str, path: Path, schemas: Mapping[str, Any] | None = None) -> Any:
    """The survey plugin of a model of a survey other than ZTF, configured as its training data was; ``schemas``
    (``folder``, ``registry``: where wire packets' schemas come from, the ``schemas`` block of the survey's
    settings) are this machine's, not the export's."""
    block = contract.get("alertvision.survey_block")
    config = dict((block or {}).get("config") or {})
    if schemas:
        config["schemas"] = {**dict(config.get("schemas") or {}), **dict(schemas)}
    try:
        return get_survey(survey, config)
    except FileNotFoundError as exc:
        raise PredictInputError(f"--schemas: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise PredictInputError(
            f"{path}: its survey block {block} cannot configure the {survey} plugin: {exc}"
        ) from exc


def _check_inputs(
    contract: Mapping[str, Any], session: Any, path: Path, survey: str = SURVEY, plugin: Any = None
) -> tuple[bool, bool]:
    """Which inputs the model takes, after checking the contract against the graph and the packets' survey's
    inputs (``survey``; ``plugin``: its plugin, for a survey other than ZTF)."""
    model_survey = contract.get("alertvision.survey", SURVEY)
    if str(model_survey).upper() != survey.upper():
        raise PredictInputError(
            f"{path} is a model of survey {model_survey!r}; these are {survey.upper()} packets "
            f"(--survey {survey.lower()}): score them with a model trained on {survey.upper()} alerts, or pass "
            f"--survey {str(model_survey).lower()} for {str(model_survey).upper()} packets"
        )
    features = list(METADATA_FEATURES) if plugin is None else list(plugin.feature_names)
    channels = list(CHANNELS) if plugin is None else list(plugin.triplet_spec.channels)
    size = 63 if plugin is None else plugin.triplet_spec.size
    packets = survey.upper()
    expected = {TRIPLET_INPUT: [len(channels), size, size], METADATA_INPUT: [len(features)]}
    graph = {i.name: list(i.shape)[1:] for i in session.get_inputs()}
    declared = contract["alertvision.inputs"]
    shapes = contract["alertvision.input_shapes"]
    if not declared or not isinstance(declared, list) or set(declared) != set(graph) or not set(graph) <= set(expected):
        raise PredictInputError(
            f"{path}: the graph takes {sorted(graph)}, its contract says {declared}; a model here takes "
            f"{TRIPLET_INPUT} and/or {METADATA_INPUT}"
        )
    for name in graph:
        want = expected[name]
        said = list(shapes.get(name, []))[1:] if isinstance(shapes, Mapping) else None
        if graph[name] != want or said != want:
            raise PredictInputError(
                f"{path}: input {name} has shape (batch, {', '.join(map(str, graph[name]))}) in the graph and "
                f"{shapes.get(name) if isinstance(shapes, Mapping) else shapes} in its contract; "
                f"{packets} packets give (batch, {', '.join(map(str, want))})"
            )
    if TRIPLET_INPUT in graph and contract["alertvision.channels"] != channels:
        raise PredictInputError(
            f"{path}: its channels are {contract['alertvision.channels']}, the packets give {channels}"
        )
    if METADATA_INPUT in graph and contract["alertvision.metadata_features"] != features:
        raise PredictInputError(
            f"{path}: its metadata features {contract['alertvision.metadata_features']} are not the "
            f"{len(features)} computed from {packets} packets ({', '.join(features)})"
        )
    return TRIPLET_INPUT in graph, METADATA_INPUT in graph


def load_model(
    path: str | os.PathLike,
    threads: int = 1,
    survey: str = "ztf",
    schemas: str | os.PathLike | None = None,
    schema_registry: str | None = None,
) -> ExportedModel:
    """The exported model at ``path``: an export folder (its model.onnx), a ``model.onnx`` or a run's
    ``model.pt`` (scored by PyTorch; no calibration: the calibrated score is the score). An ONNX file is
    checked against its alertvision contract first (:func:`_contract`): one without it, or made for other
    inputs or for another survey than ``survey`` (the packets'), is refused. ``schemas`` (a folder) and
    ``schema_registry`` (a URL): where LSST wire packets' schemas are looked up first, then the installed
    ``lsst-alert-packet`` (docs/lsst.md)."""
    survey = str(survey).lower()
    if survey not in SURVEYS:
        raise PredictInputError(f"--survey {survey!r} is not one of {', '.join(SURVEYS)}")
    places = {
        k: str(v) for k, v in (("folder", schemas), ("registry", schema_registry)) if v is not None and str(v) != ""
    }
    if places and survey == "ztf":
        raise PredictInputError(
            "--schemas and --schema-registry name where LSST wire packets' schemas come from: use them with "
            "--survey lsst (ZTF packets are Avro containers that carry their schema)"
        )
    path = Path(path)
    if path.is_dir():
        path = path / "model.onnx"
    if not path.is_file():
        raise PredictInputError(f"model {path} not found: give an export folder, a model.onnx or a run's model.pt")
    if path.suffix == ".pt":
        if survey != "ztf":
            raise PredictInputError(
                f"{path}: a model.pt carries no survey; export it to score {survey.upper()} packets"
            )
        return _torch_model(path, threads)

    try:
        session = production_session(path, threads)  # Table 2's production back-end, float32
    except Exception as exc:  # onnxruntime raises its own types for a file that is not a model
        raise PredictInputError(f"{path} is not an ONNX model onnxruntime can load: {exc}") from exc
    contract = _contract(session.get_modelmeta().custom_metadata_map, path)
    plugin = None
    if survey != "ztf" and str(contract.get("alertvision.survey", SURVEY)).lower() == survey:
        plugin = _plugin(contract, survey, path, places)
    takes_images, takes_metadata = _check_inputs(contract, session, path, survey, plugin)
    spec = contract["alertvision.calibration"]
    try:
        if spec.get("method") not in ("none", "temperature", "isotonic"):
            raise ValueError(f"unknown method {spec.get('method')!r}")
        calibration = Calibration.from_spec(spec)
    except Exception as exc:  # a spec this version cannot apply
        raise PredictInputError(f"{path}: its calibration {spec} cannot be applied: {exc}") from exc
    thresholds = contract["alertvision.thresholds"]
    fill = contract["alertvision.metadata_fill"]
    try:
        cuts = Cuts.from_spec(contract.get("alertvision.cuts") if plugin is None else None)
    except (TypeError, ValueError) as exc:
        raise PredictInputError(f"{path}: its cuts {contract.get('alertvision.cuts')} are not valid: {exc}") from exc
    if "alertvision.cuts" not in contract:
        log.info("%s records no cuts (exported before they were recorded): BTSbot's cuts %s", path, cuts.spec())

    def logits(triplets: np.ndarray | None, metadata: np.ndarray | None) -> np.ndarray:  # one run per batch
        return score_logits(session, triplets, metadata, batch_size=max(_alerts(triplets, metadata), 1))

    return ExportedModel(
        logits,
        takes_images,
        takes_metadata,
        calibration,
        thresholds.get("policies", {}) if isinstance(thresholds, Mapping) else {},
        str(path),
        fills_metadata=isinstance(fill, Mapping) and fill.get("values") is not None,
        trained_on="SYNTHETIC" if contract["alertvision.synthetic"] is True else "real",
        cuts=cuts,
        masked_pixels=(contract.get("alertvision.stamps") or {}).get("masked_pixels", {}).get("rule", "drop")
        if plugin is None
        else "drop",
        survey=survey,
        plugin=plugin,
    )


def _torch_model(path: Path, threads: int) -> ExportedModel:
    torch.set_num_threads(int(threads))
    model, _ = load_torch_model(path)
    takes_images, takes_metadata = model_inputs(model)
    fills = takes_metadata and bool(model.metadata.fill_values.numel())

    def logits(triplets: np.ndarray | None, metadata: np.ndarray | None) -> np.ndarray:  # one pass per batch
        n = _alerts(triplets, metadata)
        return torch_logits(model, triplets, metadata, np.arange(n), batch=max(n, 1))

    log.warning("%s is a model.pt: it carries no export contract; what it was trained on is unknown", path)
    return ExportedModel(logits, takes_images, takes_metadata, Calibration("none"), {}, str(path), fills_metadata=fills)


def _alerts(triplets: np.ndarray | None, metadata: np.ndarray | None) -> int:
    return len(triplets) if triplets is not None else len(metadata)


def policy_rules(model: ExportedModel, source: str = "policy") -> dict[str, tuple[Policy, str]]:
    """Per policy, the rule ``predict`` flags with and the score it reads: ``policy``, the policies as
    the study scores them (their thresholds on ``score``); ``recommended``, each policy's max-F1
    threshold recommended at export (on ``calibrated_score``)."""
    if source not in THRESHOLD_SOURCES:
        raise PredictInputError(f"--thresholds {source!r} is not one of {', '.join(THRESHOLD_SOURCES)}")
    if source == "policy":
        return {name: (policy, "score") for name, policy in POLICIES.items()}
    rules = {}
    for name, policy in POLICIES.items():
        best = (model.thresholds.get(name) or {}).get("max_f1") or {}
        if best.get("threshold") is None:
            raise PredictInputError(
                f"{model.source} recommends no threshold for {name}: export it again with this version, "
                "or use --thresholds policy"
            )
        rules[name] = (dataclasses.replace(policy, score_threshold=float(best["threshold"])), "calibrated_score")
    return rules


class PolicyTracker:
    """Per source, what a policy needs of the alerts seen so far: the brightest magpsf so far and, per
    policy, the alerts above its threshold (a few numbers per source)."""

    def __init__(self, rules: Mapping[str, tuple[Policy, str]]):
        self.rules = dict(rules)
        self.state: dict[str, list[float]] = {}  # objectId -> [brightest magpsf so far, good alerts per policy...]

    def flags(
        self, object_ids: Sequence[str], magpsf: np.ndarray, counted: np.ndarray, scores: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Whether each policy fires at each alert, in order; alerts not ``counted`` neither fire nor count."""
        out = {name: np.zeros(len(object_ids), dtype=bool) for name in self.rules}
        for i, oid in enumerate(object_ids):
            if not counted[i]:
                continue
            state = self.state.setdefault(oid, [np.inf] + [0] * len(self.rules))
            mag = float(magpsf[i])
            state[0] = min(state[0], mag)
            for k, (name, (policy, column)) in enumerate(self.rules.items(), start=1):
                if scores[column][i] > policy.score_threshold and mag < policy.mag_limit:
                    state[k] += 1
                fires = state[k] >= policy.min_alerts
                if policy.peak_limit is not None:
                    fires = fires and state[0] <= policy.peak_limit
                out[name][i] = fires
        return out


def input_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The packet files and archives of ``inputs`` (``-``, stdin, left out); PredictInputError naming a
    path that does not exist or holds no packets."""
    paths = [p for p in inputs if str(p) != "-"]
    if not paths:
        return []
    try:
        return packet_files(paths)
    except AvroInputError as exc:
        raise PredictInputError(str(exc).replace(" (config key data.avro.path)", "")) from exc


def packet_items(
    inputs: Sequence[str | os.PathLike], files: Sequence[Path] | None = None, project: bool = False
) -> Iterator[Any]:
    """Packets (``(origin, packet)``), :class:`Skip` records and archive reports of ``inputs`` (their files:
    ``files``, as :func:`input_files` gives them); ``-`` is an Avro stream on stdin. ``project``: decode
    only the fields scoring reads (:func:`~alertvision.surveys.ztf.projected_schema`), else every field."""
    files = input_files(inputs) if files is None else files
    projection = projected_schema if project else None
    if any(str(item) == "-" for item in inputs):
        yield from read_stream(sys.stdin.buffer, "<stdin>", projection)
    for path in files:
        yield from read_packet_file(path, projection)


def lsst_items(plugin: Any, inputs: Sequence[str | os.PathLike], files: Sequence[Path]) -> Iterator[Any]:
    """Packets and :class:`Skip` records of Rubin inputs as ``plugin`` reads them: files, folders, archives
    (``files``) and ``-`` (stdin: one container stream, or one wire packet)."""
    if any(str(item) == "-" for item in inputs):
        yield from plugin.read(_decompressed(sys.stdin.buffer.read()), "<stdin>")
    yield from iter_lsst_packets(plugin, list(files))


class _Refused(ValueError):
    """A packet that cannot be scored: the reason it is counted under and what to log."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass
class _Alert:
    """What one packet gives before it is admitted: the key repeats are told by, a label for the log, its
    features, its output row (but ``passes_cuts``), and, computed only for an alert admitted, its triplet and
    the cut it fails (the key it is counted under; None: it passes)."""

    key: Any
    label: str
    repeat: str
    features: np.ndarray
    row: dict[str, Any]
    triplet: Callable[[], np.ndarray]
    failed_cut: Callable[[], str | None]


def _ztf_alert(packet: Any, model: ExportedModel) -> _Alert:
    """A ZTF packet's alert: one per (objectId, jd rounded to 1e-6, fid), as the ingest keeps them."""
    if not isinstance(packet, Mapping) or not isinstance(packet.get("objectId"), str):
        raise _Refused("bad_packet", "no objectId")
    if not isinstance(packet.get("candidate"), Mapping):
        raise _Refused("bad_packet", "no candidate")
    try:
        row = candidate_row(packet)
        jd = finite_jd(row["jd"])
        fid = int(row["fid"])
        features = packet_features(packet)
    except (TypeError, ValueError, KeyError) as exc:
        raise _Refused("bad_jd" if isinstance(exc, BadJd) else "bad_candidate", f"{packet['objectId']}: {exc}") from exc
    key = (row["objectId"], round(jd, 6), fid)
    label = f"{row['objectId']} candid {row['candid']}"
    return _Alert(
        key,
        label,
        f"{label} at jd {key[1]} fid {fid}",
        features,
        {
            "objectId": row["objectId"],
            "candid": row["candid"],
            "jd": jd,
            "fid": fid,
            "magpsf": numeric_field(row["magpsf"]),
        },
        lambda: triplet_from_alert(packet, model.masked_pixels),
        lambda: model.cuts.reason(row["isdiffpos"], row["fid"], row["sgscore1"], row["sgscore2"], row["programid"]),
    )


def _survey_alert(packet: Any, model: ExportedModel) -> _Alert:
    """A survey plugin's packet's alert (LSST): one per alert id; the row's objectId is the source id, jd the
    alert's time as a Julian date, fid the band index and magpsf the PSF magnitude (see docs/lsst.md); a cut
    it fails is counted under ``cut:<name>``."""
    plugin = model.plugin
    try:
        aid = plugin.alert_id(packet)
        ds = packet["diaSource"]
        jd = float(ds["midpointMjdTai"]) + JD_MINUS_MJD
        if not np.isfinite(jd):
            raise BadJd(f"midpointMjdTai is {ds['midpointMjdTai']!r}")
        features = plugin.features(packet)
        source = plugin.source_id(packet)
    except FeatureError as exc:
        raise _Refused("missing_field", str(exc)) from exc
    except (TypeError, ValueError, KeyError) as exc:
        raise _Refused("bad_jd" if isinstance(exc, BadJd) else "bad_candidate", f"{exc}") from exc
    return _Alert(
        aid,
        f"alert {aid}",
        f"alert {aid}",
        features,
        {
            "objectId": str(source if source is not None else 0),
            "candid": aid,
            "jd": jd,
            "fid": BANDS.get(str(ds.get("band")), -1),
            "magpsf": float(features[list(plugin.feature_names).index("psf_mag")]),
        },
        lambda: plugin.triplet(packet),
        lambda: None if (reason := plugin.failed_cut(packet)) is None else f"cut:{reason}",
    )


@dataclass
class _Batch:
    rows: list[dict[str, Any]] = field(default_factory=list)
    triplets: list[np.ndarray] = field(default_factory=list)
    features: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)


class _Writer:
    """Batches of output rows to a Parquet or CSV file, streamed (the caller renames it into place)."""

    def __init__(self, path: Path, fmt: str):
        self.path, self.fmt, self._parquet = path, fmt, None
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        if self.fmt == "csv":
            frame.to_csv(self.path, mode="a", header=self.rows == 0, index=False)
        else:
            import pyarrow as pa  # deferred: pyarrow is heavy
            import pyarrow.parquet as pq  # deferred: pyarrow is heavy

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema)
            self._parquet.write_table(table)
        self.rows += len(frame)

    def close(self, columns: Sequence[str]) -> None:
        if self.rows == 0:  # still a valid, empty file with the columns
            empty = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
            if self.fmt == "csv":
                empty.to_csv(self.path, index=False)
            else:
                empty.to_parquet(self.path, index=False)
        if self._parquet is not None:
            self._parquet.close()


def output_format(path: str | os.PathLike) -> str:
    """``parquet`` or ``csv``, from the output's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise PredictInputError(f"output {path}: give a .parquet or .csv file name")


def check_output(out: Path) -> str:
    """The output's format, after proving it can be written (a folder, or a folder that cannot be written,
    fails here, before anything is scored); temporaries a killed run left beside it are removed."""
    fmt = output_format(out)
    if out.is_dir():
        raise PredictInputError(f"--out {out} is a folder: give a .parquet or .csv file name")
    check_writable(out.parent, "the predictions")
    if out.exists() and not os.access(out, os.W_OK):
        raise PredictInputError(f"--out {out} exists and cannot be overwritten: check its permissions")
    removed = clean_stale_temporaries([out])
    if removed:
        log.info("removed %d temporary file(s) a killed run left beside %s", removed, out)
    return fmt


def predict(
    inputs: Sequence[str | os.PathLike],
    model_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    threads: int = 1,
    batch_size: int = BATCH_SIZE,
    thresholds: str = "policy",
    progress: bool = True,
    survey: str = "ztf",
    schemas: str | os.PathLike | None = None,
    schema_registry: str | None = None,
    project: bool = True,
    model_threads: int | None = None,
) -> dict[str, Any]:
    """Score every packet of ``inputs`` with the model at ``model_path`` into ``out``; returns a report
    (alerts scored, skips by reason, alerts failing the cuts by reason, seconds, alerts/s). The output,
    the inputs and the model are all checked before the first packet is read. ``survey``: the packets'
    (``ztf`` or ``lsst``, Rubin's containers or wire packets); a model of another survey is refused.
    ``schemas``, ``schema_registry``: a folder and a registry URL for LSST wire packets' schemas
    (:func:`load_model`). ``threads``: 1, decode and score in turn; more, the packets are decoded in this
    thread while the model scores the batch before on ``threads - 1`` threads (``model_threads``, when
    given: on that many, sharing the cores with the decode). ``project``: ZTF packets are
    decoded with only the fields scoring reads (:func:`~alertvision.surveys.ztf.projected_schema`; the same
    features and scores as a full decode, which ``project=False`` does)."""
    out = Path(out)
    fmt = check_output(out)
    files = input_files(inputs)
    # threads > 1: the main thread decodes while the model scores the batch before in a thread of its own, on
    # the other threads - 1 (benchmarks/predict_stream.py measures both this and model_threads = threads)
    if model_threads is None:
        model_threads = max(threads - 1, 1)
    model = load_model(model_path, model_threads, survey, schemas, schema_registry)
    rules = policy_rules(model, thresholds)
    flag_columns = [f"trigger_{name}" for name in rules]
    columns = [*ALERT_COLUMNS, *SCORE_COLUMNS, *flag_columns, TRAINED_ON_COLUMN]
    if model.trained_on == "SYNTHETIC":
        log.warning(
            "%s was trained on SYNTHETIC data (simulated alerts), not %s observations: its scores of real "
            "packets mean nothing for science; every row of %s says %s = SYNTHETIC",
            model.source,
            model.survey.upper(),
            out,
            TRAINED_ON_COLUMN,
        )
    tracker = PolicyTracker(rules)
    skipped: Counter = Counter()
    cut: Counter = Counter()
    seen: set = set()  # one alert per key: ZTF's (objectId, jd, fid), as the ingest keeps; a plugin's alert id
    started = time.perf_counter()

    bar = tqdm(desc="scoring alerts", unit="alert", disable=not progress, mininterval=1)
    pool = ThreadPoolExecutor(1) if threads > 1 else None  # the model scores one batch while the next is decoded
    pending: Future | None = None

    def score(batch: _Batch) -> tuple[_Batch, np.ndarray]:
        triplets = np.stack(batch.triplets) if model.takes_images else None
        metadata = np.stack(batch.features) if model.takes_metadata else None
        return batch, model.logits(triplets, metadata)

    def emit(batch: _Batch, logits: np.ndarray) -> None:
        frame = pd.DataFrame(batch.rows, columns=list(ALERT_COLUMNS))
        finite = np.isfinite(logits)
        if not finite.all():  # never a NaN score: the alert is counted instead
            for i in np.flatnonzero(~finite):
                count_skip(skipped, "nonfinite_score", frame["objectId"].iloc[i], f"candid {frame['candid'].iloc[i]}")
            frame, logits = frame[finite].reset_index(drop=True), logits[finite]
        frame["logit"] = logits
        frame["score"] = sigmoid(logits)
        frame["calibrated_score"] = model.calibration.apply(logits)
        fired = tracker.flags(
            frame["objectId"].tolist(),
            frame["magpsf"].to_numpy(dtype=float),
            frame["passes_cuts"].to_numpy(dtype=bool),
            {"score": frame["score"].to_numpy(), "calibrated_score": frame["calibrated_score"].to_numpy()},
        )
        for name, flags in fired.items():
            frame[f"trigger_{name}"] = flags
        frame[TRAINED_ON_COLUMN] = model.trained_on
        writer.write(frame)
        bar.update(len(frame))

    with atomic_path(out) as tmp:
        writer = _Writer(tmp, fmt)
        batch = _Batch()
        try:
            items = (
                packet_items(inputs, files, project)
                if model.plugin is None
                else lsst_items(model.plugin, inputs, files)
            )
            for item in items:
                if isinstance(item, InputReport):
                    continue
                if isinstance(item, Skip):
                    count_skip(skipped, item.reason, item.origin, item.detail)
                    continue
                origin, packet = item
                added = _add(batch, packet, origin, skipped, model, seen, cut)
                if added and len(batch) >= batch_size:
                    if pool is None:
                        emit(*score(batch))
                    else:
                        if pending is not None:
                            emit(*pending.result())
                        pending = pool.submit(score, batch)
                    batch = _Batch()
            if pending is not None:
                emit(*pending.result())
            if len(batch):
                emit(*score(batch))
            writer.close(columns)
        finally:
            bar.close()
            if pool is not None:
                pool.shutdown(wait=True)
    seconds = time.perf_counter() - started
    report = {
        "alerts_scored": writer.rows,
        "skipped": dict(sorted(skipped.items())),
        "cut": dict(sorted(cut.items())),
        "survey": model.survey,
        "cuts": model.cuts.spec() if model.plugin is None else model.plugin.survey_block()["cut_settings"],
        "seconds": seconds,
        "alerts_per_second": writer.rows / seconds if seconds > 0 else float("nan"),
        "model": model.source,
        "model_trained_on": model.trained_on,
        "thresholds": thresholds,
        "out": str(out),
    }
    log.info(
        "scored %d alerts in %.1f s (%.0f alerts/s) into %s; skipped: %s; failing the cuts (scored, counted by "
        "no policy): %s",
        writer.rows,
        seconds,
        report["alerts_per_second"],
        out,
        report["skipped"] or "nothing",
        report["cut"] or "none",
    )
    if model.trained_on == "SYNTHETIC":
        log.warning("the scores in %s are of a model trained on SYNTHETIC data", out)
    return report


def _add(
    batch: _Batch,
    packet: Any,
    origin: str,
    skipped: Counter,
    model: ExportedModel,
    seen: set,
    cut: Counter,
) -> bool:
    """Decode one packet (ZTF's, or a survey plugin's) into ``batch``; a packet that cannot be scored is
    counted under its reason, a repeat of an alert already read under ``duplicate_alert``, an alert failing
    the cuts in ``cut`` (scored all the same)."""
    try:
        alert = (_ztf_alert if model.plugin is None else _survey_alert)(packet, model)
    except _Refused as exc:
        count_skip(skipped, exc.reason, origin, exc.detail)
        return False
    if alert.key in seen:
        count_skip(skipped, "duplicate_alert", origin, alert.repeat)
        return False
    if model.takes_metadata and not model.fills_metadata:
        bad = np.flatnonzero(~np.isfinite(alert.features))
        if len(bad):
            name = (METADATA_FEATURES if model.plugin is None else model.plugin.feature_names)[bad[0]]
            count_skip(
                skipped,
                f"nonfinite_{name}",
                origin,
                f"{alert.label}: {name} is {alert.features[bad[0]]} (no such field in the packet, or none to "
                f"derive it from) and the model fills none (metadata_fill: error)",
            )
            return False
    if model.takes_images:
        try:
            triplet = alert.triplet()
        except StampError as exc:
            count_skip(skipped, f"stamp_{exc.reason}", origin, f"{alert.label}: {exc}")
            return False
        batch.triplets.append(triplet)
    seen.add(alert.key)
    reason = alert.failed_cut()
    if reason is not None:
        cut[reason] += 1
    batch.features.append(alert.features)
    batch.rows.append({**alert.row, "passes_cuts": reason is None})
    return True
