"""Weights from a model trained in this study: the encoder of the best run on one dataset, as a regimen
for another (ZTF's as the start of an LSST classifier: the transfer the paper recommends).

The source run is chosen on the validation split only (``val_roc_auc_best`` in its metrics.json; the
test split is never read), among the candidate runs the rule names. Its backbone is written in timm's
local-dir layout (config.json, model.safetensors), so fine-tuning loads it as it loads fetched or
pre-trained weights, with ``source.json`` saying where it came from: the run, its identity, its
validation score, its config digest and every candidate's score.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from alertvision.atomic import atomic_dir
from alertvision.data.contract import config_digest
from alertvision.models import model_from_payload, read_model_file
from alertvision.models.fetch import FETCHED_FILES, SOURCE_FILE
from alertvision.training.pretrain import encoder_config

log = logging.getLogger(__name__)

#: What decides the source run: the validation ROC AUC of the epoch the run kept.
CHOICE_METRIC = "val_roc_auc_best"


def choose_source_run(metric_files: Iterable[str | os.PathLike]) -> tuple[Path, list[dict[str, Any]]]:
    """The run folder with the highest validation ROC AUC among ``metric_files`` (the first of a tie, in the
    order given) and every candidate's record (folder, identity, score). A run without a finite validation
    score is never chosen; none at all raises ValueError naming the files."""
    candidates = []
    for path in metric_files:
        metrics = json.loads(Path(path).read_text())
        score = metrics.get(CHOICE_METRIC)
        ok = isinstance(score, (int, float)) and math.isfinite(score)
        identity = {k: metrics.get(k) for k in ("dataset", "modality", "arch", "regimen", "fraction", "seed")}
        candidates.append({"run": str(Path(path).parent), **identity, CHOICE_METRIC: score if ok else None})
    scored = [c for c in candidates if c[CHOICE_METRIC] is not None]
    if not scored:
        files = ", ".join(c["run"] for c in candidates) or "none"
        raise ValueError(f"no candidate run has a finite {CHOICE_METRIC} to choose the source run by (runs: {files})")
    best = max(scored, key=lambda c: c[CHOICE_METRIC])  # max keeps the first of equals
    return Path(best["run"]), candidates


def write_transfer_weights(
    metric_files: Iterable[str | os.PathLike], out_folder: str | os.PathLike, *, weight_id: str
) -> dict[str, Any]:
    """Write the backbone of the best of the runs of ``metric_files`` (:func:`choose_source_run`) into
    ``out_folder`` as a timm local-dir folder with ``source.json``; returns the source record.

    Only a timm backbone can be a regimen's weights (the baseline CNN trains from scratch, as for every
    other regimen); a chosen run of another kind raises ValueError."""
    from safetensors.torch import save_file  # deferred: safetensors is heavy

    run_dir, candidates = choose_source_run(metric_files)
    payload = read_model_file(run_dir / "model.pt")
    model, info = model_from_payload(payload, run_dir / "model.pt")
    architecture = getattr(model.backbone, "timm_architecture", None)
    if architecture is None:
        raise ValueError(
            f"{run_dir}: the chosen run's model has no timm backbone ({payload['arch_cfg'].get('kind')}); "
            "only timm architectures start from a regimen's weights"
        )
    input_size = int(payload["arch_cfg"].get("input_size") or 63)
    transfer = _provenance(run_dir, payload, info, candidates)
    config = encoder_config(model.backbone, architecture, input_size, {"transfer": transfer}, "alertvision-transfer")
    state = {k: v.detach().contiguous() for k, v in model.backbone.state_dict().items()}
    with atomic_dir(out_folder) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        record = {
            "weight_id": weight_id,
            "architecture": architecture,
            "via": "transfer",
            "transfer": transfer,
            "outputs": {name: {"size": (tmp / name).stat().st_size} for name in FETCHED_FILES},
        }
        (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    log.info(
        "weights %s: the backbone of %s (%s %.4f on the validation split, best of %d runs) -> %s",
        *(weight_id, run_dir, CHOICE_METRIC, transfer[CHOICE_METRIC], len(candidates), out_folder),
    )
    return {**record, "folder": str(out_folder)}


def _provenance(
    run_dir: Path, payload: Mapping[str, Any], info: Mapping[str, Any], candidates: list[dict[str, Any]]
) -> dict[str, Any]:
    """What source.json says of the chosen run: its folder and identity, its validation score, the digest
    of what it was trained with, its input transform and every candidate's score."""
    chosen = next(c for c in candidates if c["run"] == str(run_dir))
    return {
        "run": str(run_dir),
        "run_info": {k: info.get(k) for k in ("dataset", "modality", "arch", "regimen", "fraction", "seed")},
        CHOICE_METRIC: chosen[CHOICE_METRIC],
        "chosen_on": "validation split",
        "config_digest": config_digest(payload.get("arch_cfg"), payload.get("head_cfg"), payload.get("info")),
        "input_norm": payload.get("input_norm"),
        "candidates": candidates,
    }


def transfer_record(folder: str | os.PathLike) -> Mapping[str, Any] | None:
    """The ``transfer`` block of a weights folder's source.json (None: not weights from a run of the study)."""
    try:
        return json.loads((Path(folder) / SOURCE_FILE).read_text()).get("transfer")
    except (OSError, ValueError, AttributeError):
        return None
