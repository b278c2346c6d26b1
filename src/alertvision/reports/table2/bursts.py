"""Short training bursts per architecture: the training rates the compute estimate scales up."""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping

import torch
from torch import nn

from alertvision.models import build_model
from alertvision.reports.table2.probes import _sync, device_name
from alertvision.reports.table2.protocol import _timm_name
from alertvision.reports.table2.settings import PAPER, PRODUCTION, BenchSettings
from alertvision.settings import ModelSpec

log = logging.getLogger(__name__)

# --- training throughput and the study's compute ---------------------------------------------------


def training_throughput(
    model_spec: ModelSpec | Mapping[str, Any],
    head_cfg: Mapping[str, Any],
    device: torch.device,
    *,
    batch_size: int,
    steps: int,
    warmup: int,
    production: bool,
) -> float:
    """Alerts/s of forward + backward + AdamW on random 63x63 inputs (resized by the model as in training).

    Naive: float32, eager, contiguous. Production: channels_last, plus bf16 autocast and fused
    AdamW on CUDA. Inputs stay on the device, so data loading is not included.
    """
    model_spec = ModelSpec.of(model_spec)
    torch.manual_seed(0)
    fmt = torch.channels_last if production else torch.contiguous_format
    model = build_model(model_spec, head_cfg).to(device).to(memory_format=fmt).train()
    fused = production and device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if fused else {}))
    x = torch.randn(batch_size, 3, 63, 63, device=device).div_(63).contiguous(memory_format=fmt)
    y = (torch.rand(batch_size, device=device) < 0.4).float()
    loss_fn = nn.BCEWithLogitsLoss()
    amp = production and device.type == "cuda"
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return batch_size * steps / (time.perf_counter() - start)


def training_record(
    arch: str,
    model_spec: ModelSpec | Mapping[str, Any],
    head_cfg: Mapping[str, Any],
    device: torch.device,
    batch_size: int,
    settings: BenchSettings,
) -> dict[str, Any]:
    """Naive and production training throughput of one architecture on ``device``."""
    model_spec = ModelSpec.of(model_spec)
    torch.set_num_threads(settings.cpu_threads)
    rates = {
        mode: training_throughput(
            model_spec,
            head_cfg,
            device,
            batch_size=batch_size,
            steps=settings.train_steps,
            warmup=settings.train_warmup,
            production=mode == PRODUCTION,
        )
        for mode in (PAPER, PRODUCTION)
    }
    production = "bf16 autocast, channels_last, fused AdamW" if device.type == "cuda" else "channels_last"
    record = {
        "arch": arch,
        "kind": model_spec.kind,
        "timm_name": _timm_name(model_spec),
        "input_size": model_spec.image_size,
        "device": device_name(device),
        "device_type": device.type,
        "threads": settings.cpu_threads,
        "batch_size": int(batch_size),
        "naive_alerts_per_s": rates[PAPER],
        "production_alerts_per_s": rates[PRODUCTION],
        "naive_setup": "float32 eager, contiguous",
        "production_setup": production,
    }
    log.info(
        "training %s on %s: %.1f alerts/s naive, %.1f alerts/s production (%s)",
        arch,
        record["device"],
        rates[PAPER],
        rates[PRODUCTION],
        production,
    )
    return record
