"""Score real ZTF alert packets with an exported model (``alertvision predict``).

Packets come from .avro files, folders of them, ``.tar`` / ``.tar.gz`` nightly archives (the
readers of the ``avro`` source) or an Avro stream on stdin (``-``). Per alert: the triplet through
:func:`~alertvision.data.triplet.triplet_from_alert` (the pipeline's), the 25 features from the
packet itself (:func:`~alertvision.data.ingest.packets.packet_features`: its ``prv_candidates`` are
the history a live broker has), the logit of the exported ``model.onnx`` (or of a ``model.pt``),
its score ``sigmoid(logit)``, the calibrated score (the ONNX file's ``alertvision.calibration``)
and, per trigger policy, whether it fires at this alert given the source's alerts seen so far in
this run, in arrival order. As in the study, only alerts that pass BTSbot's cuts count towards a
policy; an alert that fails them is scored and flagged ``passes_cuts = False``.

Memory stays bounded: at most two batches of triplets are held, and a few counters per source.
The output (Parquet or CSV, by its suffix) is written batch by batch to a temporary file renamed
into place at the end. A packet that cannot be scored is skipped and counted by reason (as the
ingest counts them), never a crash.
"""

from __future__ import annotations

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

from alertvision.atomic import atomic_path, check_writable
from alertvision.data.features import passes_cuts
from alertvision.data.ingest.packets import (
    InputReport,
    Skip,
    candidate_row,
    count_skip,
    numeric_field,
    packet_features,
)
from alertvision.data.triplet import StampError, triplet_from_alert
from alertvision.deploy.calibration import Calibration, sigmoid
from alertvision.evaluation.policies import POLICIES, Policy
from alertvision.models.runtime import PRODUCTION_BATCH

log = logging.getLogger(__name__)

#: Alerts scored per model call: the production back-end's batch.
BATCH_SIZE = PRODUCTION_BATCH
#: Where the policies' thresholds come from (``--thresholds``).
THRESHOLD_SOURCES = ("policy", "recommended")
ALERT_COLUMNS = ("objectId", "candid", "jd", "fid", "magpsf", "passes_cuts")
SCORE_COLUMNS = ("logit", "score", "calibrated_score")


class PredictInputError(ValueError):
    """A model or packet path that cannot be used."""


@dataclass
class ExportedModel:
    """A model to score with: its logit function, the inputs it takes, its calibration and thresholds."""

    logits: Callable[[np.ndarray | None, np.ndarray | None], np.ndarray]
    takes_images: bool
    takes_metadata: bool
    calibration: Calibration
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    masked_pixels: str = "drop"  # the stamp rule of the export's contract (alertvision.stamps)


def load_model(path: str | os.PathLike, threads: int = 1) -> ExportedModel:
    """The exported model at ``path``: an export folder (its model.onnx), a ``model.onnx`` or a run's
    ``model.pt`` (scored by PyTorch; no calibration: the calibrated score is the score)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.onnx"
    if not path.is_file():
        raise PredictInputError(f"model {path} not found: give an export folder, a model.onnx or a run's model.pt")
    if path.suffix == ".pt":
        return _torch_model(path, threads)
    from alertvision.models.onnx import METADATA_INPUT, TRIPLET_INPUT
    from alertvision.models.runtime import input_names, production_session, score_logits

    try:
        session = production_session(path, threads)  # Table 2's production back-end, float32
    except Exception as exc:  # onnxruntime raises its own types for a file that is not a model
        raise PredictInputError(f"{path} is not an ONNX model onnxruntime can load: {exc}") from exc
    meta = session.get_modelmeta().custom_metadata_map
    names = input_names(session)
    calibration = Calibration.from_spec(meta.get("alertvision.calibration", '{"method": "none"}'))
    thresholds = json.loads(meta.get("alertvision.thresholds", "{}")).get("policies", {})

    def logits(triplets: np.ndarray | None, metadata: np.ndarray | None) -> np.ndarray:  # one run per batch
        return score_logits(session, triplets, metadata, batch_size=max(_alerts(triplets, metadata), 1))

    return ExportedModel(
        logits,
        TRIPLET_INPUT in names,
        METADATA_INPUT in names,
        calibration,
        thresholds,
        str(path),
        json.loads(meta.get("alertvision.stamps", "{}")).get("masked_pixels", {}).get("rule", "drop"),
    )


def _torch_model(path: Path, threads: int) -> ExportedModel:
    import torch

    from alertvision.deploy.export import torch_logits
    from alertvision.models import model_from_payload
    from alertvision.models.onnx import model_inputs

    torch.set_num_threads(int(threads))
    model, _ = model_from_payload(torch.load(path, map_location="cpu", weights_only=False), path)
    takes_images, takes_metadata = model_inputs(model)

    def logits(triplets: np.ndarray | None, metadata: np.ndarray | None) -> np.ndarray:  # one pass per batch
        n = _alerts(triplets, metadata)
        return torch_logits(model, triplets, metadata, np.arange(n), batch=max(n, 1))

    return ExportedModel(logits, takes_images, takes_metadata, Calibration("none"), {}, str(path))


def _alerts(triplets: np.ndarray | None, metadata: np.ndarray | None) -> int:
    return len(triplets) if triplets is not None else len(metadata)


def policy_rules(model: ExportedModel, source: str = "policy") -> dict[str, tuple[Policy, str]]:
    """Per policy, the rule ``predict`` flags with and the score it reads: ``policy``, the policies as
    the study scores them (their thresholds on ``score``); ``recommended``, each policy's max-F1
    threshold recommended at export (on ``calibrated_score``)."""
    import dataclasses

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


def packet_items(inputs: Sequence[str | os.PathLike]) -> Iterator[Any]:
    """Packets (``(origin, packet)``), :class:`Skip` records and archive reports of ``inputs``; ``-`` is
    an Avro stream on stdin."""
    from alertvision.data.ingest.avro import AvroInputError, iter_packets, read_avro

    files = [p for p in inputs if str(p) != "-"]
    for item in inputs:
        if str(item) == "-":
            yield from read_avro(sys.stdin.buffer, "<stdin>")
    if files:
        try:
            yield from iter_packets(files)
        except AvroInputError as exc:
            raise PredictInputError(str(exc).replace(" (config key data.avro.path)", "")) from exc


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
            import pyarrow as pa
            import pyarrow.parquet as pq

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


def predict(
    inputs: Sequence[str | os.PathLike],
    model_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    threads: int = 1,
    batch_size: int = BATCH_SIZE,
    thresholds: str = "policy",
    progress: bool = True,
) -> dict[str, Any]:
    """Score every packet of ``inputs`` with the model at ``model_path`` into ``out``; returns a report
    (alerts scored, skips by reason, seconds, alerts/s)."""
    out = Path(out)
    fmt = output_format(out)
    model = load_model(model_path, threads)
    rules = policy_rules(model, thresholds)
    flag_columns = [f"trigger_{name}" for name in rules]
    columns = [*ALERT_COLUMNS, *SCORE_COLUMNS, *flag_columns]
    check_writable(out.parent, "the predictions")
    tracker = PolicyTracker(rules)
    skipped: Counter = Counter()
    started = time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(desc="scoring alerts", unit="alert", disable=not progress, mininterval=1)
    pool = ThreadPoolExecutor(1) if threads > 1 else None  # the model scores one batch while the next is decoded
    pending: Future | None = None

    def score(batch: _Batch) -> tuple[_Batch, np.ndarray]:
        triplets = np.stack(batch.triplets) if model.takes_images else None
        metadata = np.stack(batch.features) if model.takes_metadata else None
        return batch, model.logits(triplets, metadata)

    def emit(batch: _Batch, logits: np.ndarray) -> None:
        frame = pd.DataFrame(batch.rows, columns=list(ALERT_COLUMNS))
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
        writer.write(frame)
        bar.update(len(frame))

    with atomic_path(out) as tmp:
        writer = _Writer(tmp, fmt)
        batch = _Batch()
        try:
            for item in packet_items(inputs):
                if isinstance(item, InputReport):
                    continue
                if isinstance(item, Skip):
                    count_skip(skipped, item.reason, item.origin, item.detail)
                    continue
                origin, packet = item
                added = _add(batch, packet, origin, skipped, model)
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
        "seconds": seconds,
        "alerts_per_second": writer.rows / seconds if seconds > 0 else float("nan"),
        "model": model.source,
        "thresholds": thresholds,
        "out": str(out),
    }
    log.info(
        "scored %d alerts in %.1f s (%.0f alerts/s) into %s; skipped: %s",
        writer.rows,
        seconds,
        report["alerts_per_second"],
        out,
        report["skipped"] or "nothing",
    )
    return report


def _add(batch: _Batch, packet: Any, origin: str, skipped: Counter, model: ExportedModel) -> bool:
    """Decode one packet into ``batch``; a packet that cannot be scored is counted under its reason."""
    if not isinstance(packet, Mapping) or not isinstance(packet.get("objectId"), str):
        count_skip(skipped, "bad_packet", origin, "no objectId")
        return False
    if not isinstance(packet.get("candidate"), Mapping):
        count_skip(skipped, "bad_packet", origin, "no candidate")
        return False
    try:
        row = candidate_row(packet)
        features = packet_features(packet)
        fid = int(row["fid"])
        jd = float(row["jd"])
    except (TypeError, ValueError, KeyError) as exc:
        count_skip(skipped, "bad_candidate", origin, f"{packet['objectId']}: {exc}")
        return False
    if model.takes_images:
        try:
            triplet = triplet_from_alert(packet, model.masked_pixels)
        except StampError as exc:
            count_skip(skipped, f"stamp_{exc.reason}", origin, f"{packet['objectId']} candid {row['candid']}: {exc}")
            return False
        batch.triplets.append(triplet)
    batch.features.append(features)
    batch.rows.append(
        {
            "objectId": row["objectId"],
            "candid": row["candid"],
            "jd": jd,
            "fid": fid,
            "magpsf": numeric_field(row["magpsf"]),
            "passes_cuts": passes_cuts(row["isdiffpos"], row["fid"], row["sgscore1"], row["sgscore2"]),
        }
    )
    return True
