"""A broker's scorer written from an export's contract alone: onnxruntime, fastavro, astropy and numpy.

It imports nothing of alertvision (``test_export.py`` checks that): the stamp rules, the features'
definitions, the cuts, the policies and the calibration are read from ``model.onnx``'s
``metadata_props`` and interpreted here, so it scores a raw ZTF packet as the contract says, not as
alertvision's code happens to.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import math
import warnings
from typing import Any, Mapping, Sequence

import fastavro
import numpy as np
import onnxruntime as ort
from astropy.io import fits


def read_contract(model_path: Any) -> tuple[Any, dict[str, Any]]:
    """The onnxruntime session of ``model_path`` and its metadata_props (JSON values decoded)."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    meta = {}
    for key, value in session.get_modelmeta().custom_metadata_map.items():
        try:
            meta[key] = json.loads(value)
        except ValueError:
            meta[key] = value
    return session, meta


def read_packets(paths: Sequence[Any]) -> list[dict]:
    """Every packet of the .avro files, in order."""
    out = []
    for path in paths:
        with open(path, "rb") as fh:
            out.extend(fastavro.reader(fh))
    return out


def _get(packet: Mapping[str, Any], path: Sequence[str]) -> Any:
    node: Any = packet
    for key in path:
        if not isinstance(node, Mapping) or node.get(key) is None:
            return None
        node = node[key]
    return node


def _number(value: Any) -> float:
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


# ------------------------------------------------------------------------------------------- stamps


def triplet(packet: Mapping[str, Any], rules: Mapping[str, Any]) -> tuple[np.ndarray | None, str | None]:
    """The model's (3, 63, 63) float32 input of a packet by ``alertvision.stamps``, or (None, why dropped)."""
    size = int(rules["size"])
    masked_rule = rules["masked_pixels"]
    channels = []
    for channel in rules["channel_order"]:
        stamp = _get(packet, [rules["fields"][channel], rules["stamp_key"]])
        if stamp is None:
            return None, "missing_stamp"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ZTF's SIMPLE card is not in the standard's fixed format
            with fits.open(io.BytesIO(gzip.decompress(stamp)), memmap=False) as hdul:
                data = np.array(hdul[0].data, dtype=np.float32)
        if rules["flip"]:
            data = data[::-1]
        x = data.astype(rules["compute_dtype"])
        if x.ndim != 2:
            return None, "not_2d"
        h, w = x.shape
        if h > size or w > size:
            return None, "larger"
        if not np.isfinite(x).any():
            return None, "no_finite_pixel"
        with np.errstate(invalid="ignore"):
            masked = np.isinf(x) | (np.abs(x) > float(masked_rule["limit"]))
        if masked.any():
            if masked_rule["rule"] == "drop":
                return None, "masked_pixels"
            x[masked] = 0.0
        x[np.isnan(x)] = float(rules["nan"]["value"])
        if h < size or w < size:
            assert rules["smaller"]["where"] == "end", rules["smaller"]
            x = np.pad(x, [(0, size - h), (0, size - w)], constant_values=float(rules["smaller"]["pad_value"]))
        assert rules["norm"]["kind"] == "l2"
        norm = np.linalg.norm(x.astype(rules["norm"]["dtype"]))
        if norm == 0:
            return None, "zero_norm"
        channels.append((x / norm).astype(np.float32))
    return np.stack(channels), None


# ----------------------------------------------------------------------------------------- features


def _evaluate(formula: str, names: Mapping[str, float]) -> float:
    """A formula of the contract's language: names, numbers, '-', '+' and minimum(a, b) (numpy.minimum)."""

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Name):
            return float(names[node.id])
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Sub, ast.Add)):
            left, right = walk(node.left), walk(node.right)
            return left - right if isinstance(node.op, ast.Sub) else left + right
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "minimum":
            return float(np.minimum(*[walk(a) for a in node.args]))
        raise ValueError(f"formula {formula!r}: {ast.dump(node)} is not in the contract's language")

    return walk(ast.parse(formula, mode="eval"))


def _reduce(spec: Mapping[str, Any], rows: list[dict[str, float]]) -> float:
    if spec["reduce"] == "first":
        return rows[0][spec["take"]] if rows else math.nan
    values = [r[spec["take"] if spec["reduce"] in ("min", "max") else spec["of"]] for r in rows]
    if not rows or any(math.isnan(v) for v in values):
        return math.nan
    if spec["reduce"] == "min":
        return min(values)
    if spec["reduce"] == "max":
        return max(values)
    if spec["reduce"] == "first_argmin":
        return rows[values.index(min(values))][spec["take"]]
    raise ValueError(f"unknown reduction {spec['reduce']!r}")


def features(packet: Mapping[str, Any], spec: Mapping[str, Any]) -> np.ndarray:
    """The feature vector (float32, ``spec['order']``) of a packet by ``alertvision.features``."""
    assert set(spec["raw"]) | set(spec["derived"]) == set(spec["order"])
    values: dict[str, float] = {}
    for name, raw in spec["raw"].items():
        value = _get(packet, raw["path"])
        if value is None and "else" in raw:
            value = _get(packet, raw["else"])
        values[name] = _number(value)
    alert = {name: _number(_get(packet, path)) for name, path in spec["alert"].items()}

    history = spec["history"]
    decimals = int(history["jd_decimals"])
    alert_key = tuple(
        round(alert[k], decimals) if k == "jd" else int(alert[k]) for k in history["exclude_same_as_alert"]
    )
    kept = set()
    for entry in packet.get(history["from"]) or ():
        if any(entry.get(k) is None for k in history["require"]):
            continue
        try:
            row = {
                "jd": round(float(entry["jd"]), decimals),
                "fid": int(entry["fid"]),
                "magpsf": float(entry["magpsf"]),
            }
        except (TypeError, ValueError):
            continue
        if any(math.isnan(row[k]) for k in ("jd", "magpsf")):
            continue
        if tuple(row[k] for k in history["exclude_same_as_alert"]) == alert_key:
            continue
        before = history["before_alert"]
        if not (before["op"] == "<" and row[before["field"]] < alert[before["field"]]):
            continue
        if history["filters"] == "same" and row["fid"] != int(alert["fid"]):
            continue
        kept.add(tuple(row[k] for k in history["unique"]))
    earlier = [dict(zip(history["unique"], t)) for t in kept]
    earlier.sort(key=lambda r: tuple(r[k] for k in history["order"]))
    so_far = earlier + [{"jd": alert["jd"], "fid": alert["fid"], "magpsf": alert["magpsf"]}]

    names = dict(alert)
    for name, q in spec["quantities"].items():
        if "formula" in q:
            names[name] = _evaluate(q["formula"], names)
        elif math.isnan(alert["magpsf"]) and name in spec["alert_magpsf_missing"]:
            rule = spec["alert_magpsf_missing"][name]
            names[name] = math.nan if rule == "NaN" else (_reduce(q, earlier) if earlier else alert["jd"])
        else:
            names[name] = _reduce(q, so_far)
    for name, d in spec["derived"].items():
        values[name] = _evaluate(d["formula"], names)
    return np.array([values[name] for name in spec["order"]], dtype=np.float32)


# ------------------------------------------------------------------------------- cuts, calibration


def passes(packet: Mapping[str, Any], rule: Mapping[str, Any]) -> bool:
    """Whether a packet passes one rule of ``alertvision.cuts`` (or a group: ``all`` / ``any``)."""
    if "all" in rule:
        return all(passes(packet, r) for r in rule["all"])
    if "any" in rule:
        return any(passes(packet, r) for r in rule["any"])
    value = _get(packet, rule["path"])
    if value is None:
        return False
    if rule["op"] == "in_lower_text":
        return str(value).lower() in rule["values"]
    if rule["op"] == "in":
        return value in rule["values"]
    if rule["op"] == ">=":
        return float(value) >= rule["value"]
    raise ValueError(f"unknown cut operator {rule['op']!r}")


def calibrated(logits: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """``alertvision.calibration`` applied to logits."""
    z = np.asarray(logits, dtype=np.float64)
    if spec["method"] == "temperature":
        z = z / spec["temperature"]
    p = 1.0 / (1.0 + np.exp(-z))
    if spec["method"] == "isotonic":
        p = np.interp(p, spec["x"], spec["y"])
    return p


# ---------------------------------------------------------------------------------------- scoring


def score_packets(model_path: Any, packet_files: Sequence[Any]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Per scored packet (in order): objectId, candid, logit, score, calibrated score, passes_cuts and
    each policy's trigger; and the dropped packets counted by reason."""
    session, meta = read_contract(model_path)
    inputs = meta["alertvision.inputs"]
    rows, triplets, vectors, dropped = [], [], [], {}
    for packet in read_packets(packet_files):
        image, why = triplet(packet, meta["alertvision.stamps"])
        if "triplet" in inputs and image is None:
            dropped[why] = dropped.get(why, 0) + 1
            continue
        triplets.append(image)
        vectors.append(features(packet, meta["alertvision.features"]))
        rows.append(
            {
                "objectId": packet["objectId"],
                "candid": packet["candid"],
                "magpsf": _number(_get(packet, ["candidate", "magpsf"])),
                "passes_cuts": passes(packet, meta["alertvision.cuts"]),
            }
        )
    feed = {}
    if "triplet" in inputs:
        feed["triplet"] = np.stack(triplets).astype(np.float32)
    if "metadata" in inputs:
        feed["metadata"] = np.stack(vectors).astype(np.float32)
    logits = session.run(["logit"], feed)[0] if rows else np.zeros(0, np.float32)
    scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    calibrated_scores = calibrated(logits, meta["alertvision.calibration"])

    policies = meta["alertvision.policies"]["policies"]
    state: dict[str, dict[str, Any]] = {}
    for row, logit, score, cal in zip(rows, logits, scores, calibrated_scores):
        row.update(logit=float(logit), score=float(score), calibrated_score=float(cal))
        for name in policies:
            row[f"trigger_{name}"] = False
        if not row["passes_cuts"]:
            continue
        source = state.setdefault(row["objectId"], {"peak": math.inf, **{name: 0 for name in policies}})
        source["peak"] = min(source["peak"], row["magpsf"])
        for name, p in policies.items():
            if score > p["score_threshold"] and row["magpsf"] < p["mag_limit"]:
                source[name] += 1
            fires = source[name] >= p["min_alerts"]
            if p["peak_limit"] is not None:
                fires = fires and source["peak"] <= p["peak_limit"]
            row[f"trigger_{name}"] = fires
    return rows, dropped
