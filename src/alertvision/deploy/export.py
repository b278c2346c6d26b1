"""A trained run as one self-describing ONNX file, a model card and reference alerts for a broker.

``model.onnx`` takes what the data contract stores, the L2-normalised 63x63 triplet (science,
reference, difference; NCHW float32) and, for a multi-modal model, the raw metadata features in the
order its model.pt names (ZTF's 25 :data:`~alertvision.data.features.METADATA_FEATURES`, or another
survey's); the input transform (the x63 scale or another ``input_norm``), the resize and the fill of
non-finite features are inside the graph. It returns one logit per alert (the score is its sigmoid).
Its ``metadata_props`` carry that contract, with the calibration (:mod:`alertvision.deploy.calibration`)
and the recommended thresholds
(:mod:`alertvision.deploy.thresholds`), both fitted on the validation split only, and what a broker
needs to rebuild the inputs from a raw packet without alertvision: the stamp rules
(:func:`~alertvision.data.triplet.stamp_contract`), each feature's definition
(:func:`~alertvision.data.features.feature_contract`), the cuts the model was trained in and the
trigger policies. A calibration that makes the validation ECE worse is not applied (``none``, and the
card says why). The export refuses to write anything unless onnxruntime's logits equal PyTorch's
within :data:`PARITY_TOLERANCE` on the run's whole test split, and writes the export folder whole (a
temporary folder renamed into place): a reader sees the previous export or the new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from alertvision import __version__
from alertvision.atomic import (
    atomic_dir,
    check_writable,
    clean_stale_temporaries,
    write_json,
    write_parquet,
    write_text,
)
from alertvision.data.contract import IMAGE_SIZE, config_digest, manifest_features, open_dataset
from alertvision.data.features import DERIVED_FORMULAS, METADATA_FEATURES, RAW_FEATURES, Cuts, feature_contract
from alertvision.data.triplet import stamp_contract
from alertvision.deploy.calibration import (
    Calibration,
    expected_calibration_error,
    fit_calibration,
    plot_reliability,
    sigmoid,
)
from alertvision.deploy.thresholds import recommend_thresholds
from alertvision.evaluation.policies import POLICIES, evaluate_policies
from alertvision.models import model_from_payload, read_model_file
from alertvision.models.onnx import METADATA_INPUT, TRIPLET_INPUT, model_inputs, onnx_bytes, ort_session
from alertvision.models.runtime import score_logits
from alertvision.surveys import get_survey

log = logging.getLogger(__name__)

#: Largest |onnxruntime logit - PyTorch logit| allowed on the test split.
PARITY_TOLERANCE = 1e-5
EXPORT_FILES = ("model.onnx", "model_card.md", "reference.parquet", "reliability.png")
CHANNELS = ("science", "reference", "difference")


def torch_logits(
    model: nn.Module, images: np.ndarray | None, metadata: np.ndarray | None, rows: np.ndarray, batch: int = 256
) -> np.ndarray:
    """PyTorch logits (float32) of ``rows``, in eval mode, on the CPU."""
    takes_images, takes_metadata = model_inputs(model)
    out = []
    with torch.no_grad():
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            x = torch.from_numpy(np.ascontiguousarray(images[chunk])) if takes_images else None
            if takes_metadata:
                out.append(model((x, torch.from_numpy(metadata[chunk]))).numpy())
            else:
                out.append(model(x).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def onnx_logits(
    session: Any, images: np.ndarray | None, metadata: np.ndarray | None, rows: np.ndarray, batch: int = 256
) -> np.ndarray:
    """onnxruntime logits of ``rows`` through an exported model's session (the production back-end's
    feeding, :func:`~alertvision.models.runtime.score_logits`), reading ``batch`` rows at a time."""
    out = [
        score_logits(
            session,
            images[chunk] if images is not None else None,
            metadata[chunk] if metadata is not None else None,
            batch_size=batch,
        )
        for chunk in (rows[start : start + batch] for start in range(0, len(rows), batch))
    ]
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


@dataclass(frozen=True)
class DeploySettings:
    """The ``export`` block's calibration and threshold keys."""

    calibration: str = "temperature"
    target_purity: float = 0.9
    target_completeness: float = 0.9

    @classmethod
    def from_config(cls, block: Mapping[str, Any]) -> "DeploySettings":
        """The settings of a validated ``export`` block."""
        return cls(block["calibration"], float(block["target_purity"]), float(block["target_completeness"]))


@dataclass(frozen=True)
class ValidationFit:
    """What the validation split gives a deployed model: its calibration, its recommended thresholds
    and the validation alerts' logits and labels they were fitted on."""

    calibration: Calibration
    thresholds: dict[str, dict[str, Any]]
    logits: np.ndarray
    labels: np.ndarray
    requested: str = "none"
    fallback: str | None = None


def fit_on_validation(
    model: nn.Module,
    images: np.ndarray | None,
    metadata: np.ndarray | None,
    val_alerts: pd.DataFrame,
    val_rows: np.ndarray,
    settings: DeploySettings,
) -> ValidationFit:
    """Calibrate ``model`` and recommend thresholds from the validation alerts (``val_alerts``, the rows
    ``val_rows`` of the dataset's arrays); nothing else of the dataset is read."""
    if len(val_rows) == 0:
        raise ValueError("the validation split is empty; nothing to calibrate the exported model on")
    logits = torch_logits(model, images, metadata, val_rows)
    labels = val_alerts["label"].to_numpy(dtype=np.float64)
    calibration, fallback = choose_calibration(logits, labels, settings.calibration)
    predictions = val_alerts[["objectId", "jd", "label", "magpsf"]].assign(score=calibration.apply(logits))
    thresholds = recommend_thresholds(predictions, settings.target_purity, settings.target_completeness)
    return ValidationFit(calibration, thresholds, logits, labels, settings.calibration, fallback)


def choose_calibration(logits: np.ndarray, labels: np.ndarray, method: str) -> tuple[Calibration, str | None]:
    """``method`` fitted on validation logits and labels, unless it makes their expected calibration error
    worse than ``sigmoid(logit)``'s: then no calibration, and the reason (None when ``method`` is kept)."""
    calibration = fit_calibration(logits, labels, method)
    if calibration.method == "none":
        return calibration, None
    raw = expected_calibration_error(sigmoid(logits), labels)
    fitted = expected_calibration_error(calibration.apply(logits), labels)
    if fitted > raw:
        reason = (
            f"the fitted {method} calibration made the validation ECE worse ({raw:.3f} -> {fitted:.3f}); "
            "not applied: the calibrated score is sigmoid(logit)"
        )
        log.warning("%s", reason)
        return Calibration("none"), reason
    return calibration, None


def _manifest_digest(manifest: Mapping[str, Any]) -> str:
    """A digest of a dataset manifest, its creation time left out (a re-ingest of the same data agrees)."""
    return config_digest({k: v for k, v in manifest.items() if k != "created"})


def contract(
    payload: Mapping[str, Any],
    manifest: Mapping[str, Any],
    takes: tuple[bool, bool],
    fit: ValidationFit,
) -> dict[str, str]:
    """The ``metadata_props`` of an exported model (string values; lists and mappings as JSON)."""
    takes_images, takes_metadata = takes
    inputs = ([TRIPLET_INPUT] if takes_images else []) + ([METADATA_INPUT] if takes_metadata else [])
    fill = payload.get("metadata_fill")
    features = model_features(payload, manifest)
    survey = survey_of_manifest(manifest)
    block = survey_block(manifest)
    props = {
        "alertvision.survey": survey.upper(),
        "alertvision.inputs": inputs,
        "alertvision.input_shapes": {
            **({TRIPLET_INPUT: ["batch", *dataset_image_shape(manifest)]} if takes_images else {}),
            **({METADATA_INPUT: ["batch", len(features)]} if takes_metadata else {}),
        },
        "alertvision.layout": "NCHW float32",
        "alertvision.channels": list(CHANNELS) if survey == "ztf" else list(block["triplet"]["channels"]),
        "alertvision.triplet": "each 63x63 stamp divided by its L2 norm (the data contract's images.npy); "
        "the input transform below is inside the graph; built from a packet by alertvision.stamps",
        **_survey_rules(manifest, survey, block),
        "alertvision.survey_block": block,
        "alertvision.policies": policies_contract(),
        "alertvision.input_norm": payload.get("input_norm"),
        "alertvision.metadata_features": list(features) if takes_metadata else [],
        "alertvision.metadata_fill": {
            "policy": payload.get("arch_cfg", {}).get("metadata_fill"),
            "values": fill,
            "inside_graph": True,
        }
        if takes_metadata
        else None,
        "alertvision.output": "logit; probability = sigmoid(logit)",
        "alertvision.calibration": {
            **fit.calibration.spec(),
            "fitted_on": "validation split",
            "requested": fit.requested,
            "fallback": fit.fallback,
        },
        "alertvision.thresholds": {"score": "calibrated", "chosen_on": "validation split", "policies": fit.thresholds},
        "alertvision.version": __version__,
        "alertvision.config_digest": config_digest(
            payload.get("arch_cfg"), payload.get("head_cfg"), payload.get("info")
        ),
        "alertvision.dataset_manifest_digest": _manifest_digest(manifest),
        "alertvision.synthetic": bool(manifest.get("synthetic", False)),
    }
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in props.items()}


def survey_of_manifest(manifest: Mapping[str, Any]) -> str:
    """The survey a dataset's packets came from (``ztf`` where its manifest names none: it predates the key)."""
    return str(manifest.get("survey") or "ztf").lower()


def dataset_features(manifest: Mapping[str, Any]) -> tuple[str, ...]:
    """The metadata feature columns of a dataset, in model order: its survey's."""
    return manifest_features(manifest)


def model_features(payload: Mapping[str, Any], manifest: Mapping[str, Any]) -> tuple[str, ...]:
    """The metadata features a model reads, in input order: those its model.pt names (the dataset's it was
    trained on), else the dataset's."""
    return tuple(payload.get("metadata_features") or dataset_features(manifest))


def dataset_image_shape(manifest: Mapping[str, Any]) -> list[int]:
    """(channels, size, size) of a dataset's images: its survey's triplet."""
    return [int(x) for x in manifest.get("image_shape") or (3, IMAGE_SIZE, IMAGE_SIZE)]


def survey_block(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The survey block of the contract, from the survey plugin as the dataset was built with it."""
    survey = survey_of_manifest(manifest)
    if survey == "ztf":
        block = {"cuts": Cuts.from_spec(manifest.get("cuts")).spec(), "masked_pixels": _masked_pixels(manifest)}
        return get_survey("ztf", block).survey_block()
    return {
        **get_survey(survey, manifest.get("survey_config") or {}).survey_block(),
        "config": manifest.get("survey_config") or {},
    }


def _survey_rules(manifest: Mapping[str, Any], survey: str, block: Mapping[str, Any]) -> dict[str, Any]:
    """``alertvision.stamps``, ``.features`` and ``.cuts``: ZTF's machine-readable rules, or another survey's
    parts of its block."""
    if survey == "ztf":
        return {
            "alertvision.stamps": stamp_contract(_masked_pixels(manifest)),
            "alertvision.features": feature_contract(manifest.get("history")),
            "alertvision.cuts": cuts_contract(manifest),
        }
    return {
        "alertvision.stamps": block["triplet"],
        "alertvision.features": {
            "order": [f["name"] for f in block["metadata_features"]],
            "definitions": block["metadata_features"],
            "history": block["history"],
        },
        "alertvision.cuts": {"rules": block["cuts"], "settings": block.get("cut_settings")},
    }


def _masked_pixels(manifest: Mapping[str, Any]) -> str:
    """The masked-pixel rule the dataset was built with (``drop`` for a dataset that does not say: it held
    no masked pixel the rule could have changed, or came from the release's ready-made triplets)."""
    return str(manifest.get("masked_pixels") or "drop")


def cuts_contract(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The cuts of the training alerts, machine-readable: every rule must hold (``all``); ``any`` of a list.

    ``programids`` and ``isdiffpos`` are the training data's ``data.cuts`` (BTSbot's where the manifest records
    none, as for the release), the settings :meth:`~alertvision.data.features.Cuts.from_spec` reads back."""
    cuts = Cuts.from_spec(manifest.get("cuts"))
    lenient = cuts.isdiffpos == "lenient"
    isdiffpos = (
        {"path": ["candidate", "isdiffpos"], "op": "in_lower_text", "values": ["t", "1", "true"]}
        if lenient
        else {"path": ["candidate", "isdiffpos"], "op": "in", "values": ["t"]}
    )
    return {
        **cuts.spec(),
        "all": [
            {"path": ["candidate", "programid"], "op": "in", "values": list(cuts.programids)},
            isdiffpos,
            {"path": ["candidate", "fid"], "op": "in", "values": [1, 2]},
            {
                "any": [
                    {"path": ["candidate", "sgscore1"], "op": ">=", "value": 0},
                    {"path": ["candidate", "sgscore2"], "op": ">=", "value": 0},
                ]
            },
        ],
        "formula": f"programid in {{{', '.join(map(str, cuts.programids))}}} and "
        + ("isdiffpos in {t, 1, true} (any case)" if lenient else "isdiffpos == 't' (exactly)")
        + " and fid in {1, 2} and (sgscore1 >= 0 or sgscore2 >= 0); a null field fails its rule",
        "in_domain": "the model was trained and tested on alerts that pass these cuts only; scores of other alerts "
        "are not validated (alertvision predict scores them and flags passes_cuts = false)",
        "dims_cut": manifest.get("dims_cut"),
    }


def policies_contract() -> dict[str, Any]:
    """The trigger policies, machine-readable (:data:`~alertvision.evaluation.policies.POLICIES`)."""
    return {
        "rule": "per source (objectId), over its alerts that pass alertvision.cuts seen so far in arrival order, "
        "this one included: fires at an alert when at least min_alerts of them have score > score_threshold "
        "and magpsf < mag_limit, and (peak_limit set) the source's brightest magpsf so far <= peak_limit",
        "score": "sigmoid(logit) (the study's thresholds); the recommended thresholds of alertvision.thresholds "
        "are on the calibrated score",
        "policies": {
            name: {
                "min_alerts": p.min_alerts,
                "score_threshold": p.score_threshold,
                "mag_limit": p.mag_limit,
                "peak_limit": p.peak_limit,
                "production": p.production,
                "definition": p.describe(),
            }
            for name, p in POLICIES.items()
        },
    }


def study_path(path: str | os.PathLike) -> str:
    """``path`` as the card records it: relative to the study (the working folder), never a machine's
    absolute path; a folder outside the study by its name alone."""
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return f"{path.name} (a folder outside the study)"


def export_run(
    run_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    split_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    n_reference: int = 8,
    threads: int = 1,
    settings: DeploySettings = DeploySettings(),
    run_json: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Export the run in ``run_dir`` to ``out_dir`` (:data:`EXPORT_FILES`, and ``run.json`` holding
    ``run_json`` when given); returns the parity check, the calibration report and the contract. The
    folder is written whole or not at all: nothing is written when parity fails, and a failure while
    writing leaves the previous export as it was."""
    import onnx  # deferred: onnx is heavy

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    torch.set_num_threads(int(threads))
    payload = read_model_file(run_dir / "model.pt")
    model, info = model_from_payload(payload, run_dir / "model.pt")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    data = open_dataset(dataset_dir)
    table = pd.read_parquet(split_file)
    rows = np.sort(table.loc[table["split"] == "test", "row"].to_numpy())
    val_rows = np.sort(table.loc[table["split"] == "val", "row"].to_numpy())
    if len(rows) == 0:
        raise ValueError(f"{split_file}: the test split is empty; nothing to check the export against")
    takes = model_inputs(model)
    images = data.images if takes[0] else None
    features = model_features(payload, data.manifest)
    if takes[1] and features != data.metadata_features:
        raise ValueError(
            f"{run_dir / 'model.pt'} reads the metadata features {', '.join(features)}; the dataset {dataset_dir} "
            f"holds {', '.join(data.metadata_features)}: export it with the dataset it was trained on"
        )
    metadata = data.alerts[list(features)].to_numpy(dtype=np.float32) if takes[1] else None

    fit = fit_on_validation(model, images, metadata, data.alerts.iloc[val_rows], val_rows, settings)
    expected = torch_logits(model, images, metadata, rows)
    proto = onnx.load_from_string(onnx_bytes(model))
    for key, value in contract(payload, data.manifest, takes, fit).items():
        proto.metadata_props.add(key=key, value=value)
    blob = proto.SerializeToString()
    got = onnx_logits(ort_session(blob, threads), images, metadata, rows)
    worst = float(np.max(np.abs(got - expected)))
    if not worst <= PARITY_TOLERANCE:
        raise AssertionError(
            f"{run_dir}: onnxruntime and PyTorch logits differ by up to {worst:.3g} on the test split "
            f"(tolerance {PARITY_TOLERANCE:g}); nothing exported"
        )
    parity = {"n_test_alerts": int(len(rows)), "max_abs_logit_diff": worst, "tolerance": PARITY_TOLERANCE}
    log.info("parity on %d test alerts: max |logit difference| %.3g", len(rows), worst)
    test_labels = data.alerts["label"].to_numpy(dtype=np.float64)[rows]
    curves = {
        "validation, raw": (sigmoid(fit.logits), fit.labels),
        "validation, calibrated": (fit.calibration.apply(fit.logits), fit.labels),
        "test, raw": (sigmoid(expected), test_labels),
        "test, calibrated": (fit.calibration.apply(expected), test_labels),
    }
    ece = {name: expected_calibration_error(p, y) for name, (p, y) in curves.items()}
    log.info("calibration %s; ECE %s", fit.calibration.method, ", ".join(f"{k} {v:.3f}" for k, v in ece.items()))

    check_writable(out_dir.parent, "the exported model")
    clean_stale_temporaries([out_dir])  # what a killed earlier export of this folder left beside it
    reference = _reference_table(data.alerts, images, metadata, rows, expected, n_reference, fit.calibration, features)
    synthetic = " (SYNTHETIC DATA)" if data.manifest.get("synthetic") else ""
    card = model_card(run_dir, payload, info, metrics, data.manifest, parity, takes, fit, ece)
    with atomic_dir(out_dir) as tmp:
        (tmp / "model.onnx").write_bytes(blob)
        write_parquet(tmp / "reference.parquet", reference)
        plot_reliability(
            curves, tmp / "reliability.png", f"Reliability of {run_dir.name} ({fit.calibration.method}){synthetic}"
        )
        write_text(tmp / "model_card.md", card)
        if run_json is not None:
            write_json(tmp / "run.json", run_json)
    return {
        "parity": parity,
        "ece": ece,
        "calibration": fit.calibration.spec(),
        "thresholds": fit.thresholds,
        "contract": {p.key: p.value for p in proto.metadata_props},
    }


def triplet_digest(triplet: np.ndarray) -> str:
    """sha256 of one (3, 63, 63) triplet as C-contiguous little-endian float32 bytes."""
    return hashlib.sha256(np.ascontiguousarray(triplet, dtype="<f4").tobytes()).hexdigest()


def _reference_table(
    alerts: pd.DataFrame,
    images: np.ndarray | None,
    metadata: np.ndarray | None,
    rows: np.ndarray,
    logits: np.ndarray,
    n: int,
    calibration: Calibration,
    features: tuple[str, ...] = METADATA_FEATURES,
) -> pd.DataFrame:
    """The first ``n`` test alerts (by row) with their inputs (``triplet``: the (3, 63, 63) float32 array
    flattened in C order, and its sha256; the 25 features), the expected logit, score (its sigmoid) and
    calibrated score."""
    pick = np.arange(min(n, len(rows)))
    chosen = rows[pick]
    out = alerts.iloc[chosen][["alert_id", "objectId", "jd"]].reset_index(drop=True)
    if images is not None:
        out["triplet"] = [np.asarray(images[r], dtype=np.float32).ravel() for r in chosen]
        out["triplet_sha256"] = [triplet_digest(images[r]) for r in chosen]
    if metadata is not None:
        for j, name in enumerate(features):
            out[name] = metadata[chosen, j]
    out["logit"] = logits[pick]
    out["score"] = sigmoid(logits[pick])
    out["calibrated_score"] = calibration.apply(logits[pick])
    return out


def model_card(
    run_dir: Path,
    payload: Mapping[str, Any],
    info: Mapping[str, Any],
    metrics: Mapping[str, Any],
    manifest: Mapping[str, Any],
    parity: Mapping[str, Any],
    takes: tuple[bool, bool],
    fit: ValidationFit,
    ece: Mapping[str, float],
) -> str:
    """The model card (Markdown) of an exported run."""
    synthetic = bool(manifest.get("synthetic", False))
    name = survey_of_manifest(manifest).upper()
    rules = contract_section(manifest) if name == "ZTF" else survey_section(manifest)
    policies = evaluate_policies(pd.read_parquet(run_dir / "predictions.parquet"), POLICIES)
    rows = "\n".join(
        f"| {name} | {m['f1']:.3f} | {m['completeness']:.3f} | {m['purity']:.3f} | "
        f"{m['trigger_delay_days_median']:.2f} |"
        for name, m in policies.items()
    )
    arch = payload["arch_cfg"]
    feed = ["triplet"] if takes[0] else []
    feed += ["metadata"] if takes[1] else []
    snippet_feed = ", ".join(f'"{name}": {name}' for name in feed)
    n_features = len(model_features(payload, manifest))
    metadata_line = (
        f"- Input `metadata`: float32 (batch, {n_features}), the raw features in the order of "
        f"`alertvision.metadata_features`; non-finite values are filled inside the graph ({arch.get('metadata_fill')})."
        if takes[1]
        else ""
    )
    return f"""# Model card: {info.get("arch", arch.get("kind"))} ({info.get("modality", "image")}, regimen \
{info.get("regimen", "?")}, {info.get("fraction", "?")}% of the training alerts, seed {info.get("seed", "?")})

{"**SYNTHETIC DATA**: trained and tested on simulated alerts, not observations. " if synthetic else ""}\
Exported by alertvision {__version__} from `{study_path(run_dir)}`.

## Trained on
- Dataset `{manifest.get("dataset")}` from source `{manifest.get("source")}`{" (SYNTHETIC)" if synthetic else ""}: \
{manifest.get("n_alerts")} alerts of {manifest.get("n_sources")} sources; per subset and split: \
`{json.dumps(manifest.get("alerts", {}))}`.
- This run: {metrics.get("n_train_alerts")} training alerts of {metrics.get("n_train_sources")} sources, \
{metrics.get("n_val_alerts")} validation alerts, best epoch {metrics.get("best_epoch")} of {metrics.get("epochs_run")}.

## Test metrics ({metrics.get("n_test_alerts")} test alerts)
- ROC AUC {metrics.get("test_roc_auc", float("nan")):.4f}, loss {metrics.get("test_loss", float("nan")):.4f}.

| policy | F1 | completeness | purity | median trigger delay (days) |
|---|---|---|---|---|
{rows}

The policies above use their own (BTSbot's) thresholds on `sigmoid(logit)`.

## Calibration and recommended thresholds (fitted on the validation split only)
{_calibration_section(fit, ece)}

## Parity
onnxruntime and PyTorch logits agree within {parity["max_abs_logit_diff"]:.2g} on all \
{parity["n_test_alerts"]} test alerts (tolerance {parity["tolerance"]:g}).

## Preprocessing (inside the graph unless said)
- Input `triplet`: float32 (batch, 3, 63, 63), NCHW, channels science, reference, difference, built
  by the broker from the packet's stamps as in *The contract* below.
- Then, inside the graph: `{json.dumps(payload.get("input_norm"))}`, and a bilinear resize to \
{arch.get("input_size", 63)} px.
{metadata_line}

{rules}

## Intended use and limits
Ranking {name} alerts for follow-up as in the Bright Transient Survey (Rehemtulla et al.). Trained on
{"simulated" if synthetic else name} alerts only: scores on other surveys, or on alerts outside the
cuts of the training set (`alertvision.cuts`: real, positive, not a star), are not validated.

## Score a packet with onnxruntime alone
```python
import json, numpy as np, onnxruntime as ort
session = ort.InferenceSession("model.onnx")
meta = session.get_modelmeta().custom_metadata_map            # the contract: inputs, features, fill
logit = session.run(["logit"], {{{snippet_feed}}})[0]            # triplet: (n, 3, 63, 63) float32
score = 1 / (1 + np.exp(-logit))                              # calibrated: see alertvision.calibration
```
`reference.parquet` holds test alerts with their inputs (`triplet`: the float32 (3, 63, 63) array
flattened in C order, and its sha256; the 25 features) and the expected logit, score and calibrated
score: feed them to `model.onnx` to check a broker's set-up, then its preprocessing against *The
contract*.
"""


def survey_section(manifest: Mapping[str, Any]) -> str:
    """The card's contract section for a survey other than ZTF: its block (``alertvision.survey_block``)."""
    block = survey_block(manifest)
    t = block["triplet"]
    features = "\n".join(f"| `{f['name']}` | {f['formula']} | {f['units']} |" for f in block["metadata_features"])
    return f"""## The contract (machine-readable in `metadata_props`: `alertvision.survey_block`)
Survey **{block["survey"].upper()}**. Triplet: channels {", ".join(t["channels"])} from {", ".join(t["cutouts"])};
{t["size"]}x{t["size"]} px at {t["pixel_scale"]}; orientation {t["orientation"]}; non-finite pixels: {t["nonfinite"]};
fit: {t["fit"]}; normalisation: {t["normalisation"]}. Cuts: {"; ".join(c["keeps"] for c in block["cuts"])}.
History: {block["history"]}.

| feature | formula | units |
|---|---|---|
{features}
"""


def contract_section(manifest: Mapping[str, Any]) -> str:
    """The card's readable form of the stamp rules, features, cuts and policies in ``metadata_props``."""
    stamps = stamp_contract(_masked_pixels(manifest))
    masked = stamps["masked_pixels"]
    history = manifest.get("history")
    features = "\n".join(
        [f"| `{name}` | `{path}` | {units} |" for name, (path, units) in RAW_FEATURES.items()]
        + [f"| `{name}` | `{formula}` | {units} |" for name, (formula, units) in DERIVED_FORMULAS.items()]
    )
    policies = "\n".join(f"- `{name}`: {p['definition']}" for name, p in policies_contract()["policies"].items())
    return f"""## The contract (machine-readable in `metadata_props`)
A broker with onnxruntime, fastavro, astropy and numpy rebuilds the inputs from a raw packet with these
rules alone; `tests/unit/test_export.py` scores the real test packets that way and matches
`alertvision predict`.

**Stamps** (`alertvision.stamps`). Channels science, reference, difference from `cutoutScience`,
`cutoutTemplate`, `cutoutDifference` (`stampData`: gzipped FITS; the primary HDU's image as stored, no
flip, read as float32). In float64: masked pixels (inf, or |value| > {masked["limit"]:g}; ZTF writes
-3.4e38 into masked template pixels), rule `{masked["rule"]}`: {masked[masked["rule"]]}; NaN -> 0; a
cutout with no finite pixel, larger than {IMAGE_SIZE}x{IMAGE_SIZE}, not 2-D, missing or all zero drops
the alert; a smaller one is padded with 0 after its last row and column; each cutout divided by its
float64 L2 norm, then cast to float32.

**Features** (`alertvision.features`), from the packet alone, float64 then cast to float32; a missing
value is NaN (filled inside the graph). Derived features run over the alert's own `prv_candidates`
detections (magpsf not null; all filters; jd rounded to 6 decimals; the entry at the alert's (jd, fid)
left out; repeats once; only earlier than the alert) followed by the alert: `first_jd = minimum(jdstarthist,
first detection's jd)`, `peak_mag` / `max_mag` the min / max magpsf, `jd_peak` the jd of the first
detection reaching `peak_mag`. With no history the alert alone counts (days_since_peak 0). The training
set's derived features ran over {f"`{history}`" if history else "the source's alerts so far"}.

| feature | packet field or formula | units |
|---|---|---|
{features}

**Cuts** (`alertvision.cuts`): trained and tested only on alerts with {cuts_contract(manifest)["formula"]}
(in-domain); other alerts are scored but not validated.

**Trigger policies** (`alertvision.policies`), per source over its in-domain alerts so far, on
`sigmoid(logit)`:
{policies}

**Calibration** (`alertvision.calibration`): `method` temperature (`sigmoid(logit / temperature)`),
isotonic (`numpy.interp(sigmoid(logit), x, y)`: breakpoints `x` ascending, values `y`, clipped at the
ends) or none (`sigmoid(logit)`); `fallback` says why a requested calibration was not applied."""


def _calibration_section(fit: ValidationFit, ece: Mapping[str, float]) -> str:
    """The card's calibration paragraph and thresholds table."""
    spec = fit.calibration.spec()
    params = f"temperature {spec['temperature']:.4f}" if "temperature" in spec else ""
    if "x" in spec:
        params = f"{len(spec['x'])} breakpoints"
    lines = [
        f"Method `{spec['method']}` ({params or 'no parameters'}): calibrated probability = `{spec['formula']}`; "
        f"the parameters are in the ONNX metadata `alertvision.calibration`. Expected calibration error "
        f"(15 equal-width bins) before -> after: validation {ece['validation, raw']:.3f} -> "
        f"{ece['validation, calibrated']:.3f}, test {ece['test, raw']:.3f} -> {ece['test, calibrated']:.3f} "
        "(`reliability.png`). Calibrated probabilities follow the class balance of the validation split, "
        "not of a night's alert stream."
        + (f" **Requested `{fit.requested}`, not applied**: {fit.fallback}." if fit.fallback else ""),
        "",
        "Recommended thresholds on the calibrated score, per policy (`alertvision.thresholds`): the one with "
        "the best validation F1, the lowest reaching the target purity, the highest reaching the target "
        "completeness (validation F1 / completeness / purity in brackets; - where no threshold reaches the target).",
        "",
        "| policy | own threshold | max F1 | purity target | completeness target |",
        "|---|---|---|---|---|",
    ]

    def cell(point: Mapping[str, Any] | None) -> str:
        if not point or point.get("threshold") is None:
            return "-"
        return f"{point['threshold']:.2f} ({point['f1']:.2f} / {point['completeness']:.2f} / {point['purity']:.2f})"

    for name, rec in fit.thresholds.items():
        lines.append(
            f"| {name} | {rec['policy_threshold']:g} | {cell(rec['max_f1'])} | "
            f">= {rec['purity']['target']:g}: {cell(rec['purity'])} | "
            f">= {rec['completeness']['target']:g}: {cell(rec['completeness'])} |"
        )
    return "\n".join(lines)


def best_run(metric_files: list[str | os.PathLike]) -> Path:
    """The metrics.json of the run with the highest validation ROC AUC (its best epoch's); ties go to the
    first path in sorted order. The test split is not read."""
    best, best_value = None, -np.inf
    for path in sorted(Path(p) for p in metric_files):
        value = json.loads(path.read_text()).get("val_roc_auc_best")
        value = -np.inf if value is None or not np.isfinite(value) else float(value)
        if best is None or value > best_value:
            best, best_value = path, value
    if best is None:
        raise ValueError("no runs to choose the best from")
    return best
