"""Offline encoder pre-training on a corpus of images with volunteer vote counts, Zoobot-style.

A timm backbone plus a linear head predicts, per image, one output per answer of every question;
the loss is Zoobot's Dirichlet-multinomial likelihood of the vote counts (or a plain per-question
cross-entropy on the vote fractions). The trained backbone is written in timm's ``local-dir``
layout, so fine-tuning loads it exactly like published weights:
``resolve_weights("local-dir:" + folder)``.

A corpus folder holds ``images.npy`` ((N, 3, H, W) float32, read memory-mapped),
``labels.parquet`` (an ``image`` column, the row of images.npy, and one vote-count column
``<question>_<answer>`` per answer) and ``manifest.json`` (with ``questions``: {question:
[answers]}, in column order); :func:`alertvision.synthetic.galaxies.write_galaxy_corpus` writes one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from alertvision.atomic import atomic_dir
from alertvision.models import _timm_size_kwargs
from alertvision.training import engine
from alertvision.training.checkpoint import Checkpointer, params_digest
from alertvision.training.data import Batches, Loading
from alertvision.training.device import pick_device, seed_everything, torch_threads
from alertvision.training.engine import Best, Precision
from alertvision.training.schedule import warmup_cosine

log = logging.getLogger(__name__)
CORPUS_FILES = ("images.npy", "labels.parquet", "manifest.json")
LOSSES = ("dirichlet", "cross_entropy")
CONCENTRATION_MIN, CONCENTRATION_MAX = 1.0, 100.0

Questions = Mapping[str, Sequence[str]] | Sequence[int]


# --- losses --------------------------------------------------------------------------------------------


def question_slices(questions: Questions) -> list[slice]:
    """The output columns of each question: from {question: [answers]} (in order) or answer counts."""
    sizes = [len(a) for a in questions.values()] if isinstance(questions, Mapping) else [int(k) for k in questions]
    ends = np.cumsum(sizes)
    return [slice(int(e - s), int(e)) for s, e in zip(sizes, ends, strict=True)]


def concentrations_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Dirichlet concentrations in [1, 100] from raw outputs, as Zoobot's head: 1 + 99 sigmoid(x)."""
    return CONCENTRATION_MIN + (CONCENTRATION_MAX - CONCENTRATION_MIN) * torch.sigmoid(logits)


def dirichlet_multinomial_loss(
    concentrations: torch.Tensor, counts: torch.Tensor, questions: Questions, reduction: str = "mean"
) -> torch.Tensor:
    """Negative log Dirichlet-multinomial likelihood of vote counts, summed over questions (Zoobot's loss).

    For one question with answer counts k_j (n = sum k_j volunteers) and predicted concentrations
    a_j > 0 (A = sum a_j)::

        log p(k | a) = lgamma(A) - lgamma(n + A) + lgamma(n + 1)
                       + sum_j [lgamma(k_j + a_j) - lgamma(a_j) - lgamma(k_j + 1)]

    A question no volunteer reached (n = 0) has log p = 0 and adds nothing. ``concentrations``
    (B, answers) are positive (see :func:`concentrations_from_logits`); ``counts`` (B, answers).
    Returns the mean over the batch, or the (B,) per-image losses with ``reduction="none"``.
    """
    a, k = concentrations.float(), counts.float()
    total = a.new_zeros(a.shape[0])
    for s in question_slices(questions):
        aq, kq = a[:, s], k[:, s]
        n, big_a = kq.sum(dim=1), aq.sum(dim=1)
        log_p = (
            torch.lgamma(big_a)
            - torch.lgamma(n + big_a)
            + torch.lgamma(n + 1)
            + (torch.lgamma(kq + aq) - torch.lgamma(aq) - torch.lgamma(kq + 1)).sum(dim=1)
        )
        total = total - log_p
    return _reduce(total, reduction)


def cross_entropy_fraction_loss(
    logits: torch.Tensor, counts: torch.Tensor, questions: Questions, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy between each question's vote fractions and the softmax of its logits, summed over questions.

    ``-sum_j (k_j / n) log softmax(x)_j`` per question; a question with no votes adds nothing.
    """
    x, k = logits.float(), counts.float()
    total = x.new_zeros(x.shape[0])
    for s in question_slices(questions):
        kq = k[:, s]
        fractions = kq / kq.sum(dim=1, keepdim=True).clamp_min(1.0)
        total = total - (fractions * F.log_softmax(x[:, s], dim=1)).sum(dim=1)
    return _reduce(total, reduction)


def _reduce(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_image.mean()
    if reduction == "none":
        return per_image
    raise ValueError(f"unknown reduction {reduction!r}; use 'mean' or 'none'")


def _loss_fn(name: str, questions: Questions):
    if name == "dirichlet":
        return lambda out, counts: dirichlet_multinomial_loss(concentrations_from_logits(out), counts, questions)
    if name == "cross_entropy":
        return lambda out, counts: cross_entropy_fraction_loss(out, counts, questions)
    raise ValueError(f"unknown pretrain loss {name!r}; known: {', '.join(LOSSES)}")


# --- corpus ---------------------------------------------------------------------------------------------


def open_corpus(corpus_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict]:
    """(memory-mapped images, vote counts (N, answers) float32, manifest) of a corpus folder."""
    corpus_dir = Path(corpus_dir)
    for name in CORPUS_FILES:
        if not (corpus_dir / name).is_file():
            raise FileNotFoundError(
                f"pretrain corpus {corpus_dir}: {corpus_dir / name} is missing (a corpus "
                f"folder holds {', '.join(CORPUS_FILES)})"
            )
    manifest = json.loads((corpus_dir / "manifest.json").read_text())
    questions = manifest.get("questions")
    if not isinstance(questions, dict) or not questions:
        raise ValueError(f"{corpus_dir / 'manifest.json'} names no 'questions' ({{question: [answers]}})")
    images = np.load(corpus_dir / "images.npy", mmap_mode="r")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{corpus_dir / 'images.npy'}: expected (N, 3, H, W) images, got {images.shape}")
    labels = pd.read_parquet(corpus_dir / "labels.parquet").sort_values("image")
    columns = [f"{q}_{a}" for q, answers in questions.items() for a in answers]
    missing = [c for c in columns if c not in labels.columns]
    if missing:
        raise ValueError(f"{corpus_dir / 'labels.parquet'} lacks vote columns {missing}")
    if not np.array_equal(labels["image"].to_numpy(), np.arange(len(images))):
        raise ValueError(
            f"{corpus_dir / 'labels.parquet'}: the 'image' column must hold each row of "
            f"images.npy (0..{len(images) - 1}) once"
        )
    return images, labels[columns].to_numpy(dtype=np.float32), manifest


def split_rows(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train rows, val rows), both sorted; at least one image in each."""
    if n < 2:
        raise ValueError(f"pre-training needs at least 2 images, the corpus has {n}")
    n_val = min(n - 1, max(1, int(round(val_fraction * n))))
    order = np.random.default_rng([seed, 7]).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


# --- model ------------------------------------------------------------------------------------------------


class Pretrainer(nn.Module):
    """A timm backbone (``num_classes=0``) and a linear head with one output per answer.

    The head starts at zero weights and the ``bias`` given (see :func:`constant_outputs`), so
    training starts from the best image-independent prediction instead of spending its first
    epochs learning the answers' overall fractions.
    """

    def __init__(self, backbone: nn.Module, n_outputs: int, input_size: int, bias: torch.Tensor | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, n_outputs)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.copy_(bias if bias is not None else torch.zeros(n_outputs))
        self.input_size = int(input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.head(self.backbone(x))


def build_pretrainer(timm_name: str, input_size: int, n_outputs: int, bias: torch.Tensor | None = None) -> Pretrainer:
    """A randomly initialised backbone, built for ``input_size`` where the architecture needs it (MaxViT)."""
    import timm  # deferred: timm is heavy

    backbone = timm.create_model(timm_name, pretrained=False, num_classes=0, **_timm_size_kwargs(timm_name, input_size))
    return Pretrainer(backbone, n_outputs, input_size, bias)


def constant_outputs(
    counts: np.ndarray, loss: str, questions: Questions, steps: int = 300, max_rows: int = 20000, seed: int = 0
) -> torch.Tensor:
    """The outputs (one per answer) that minimise ``loss`` when every image gets the same prediction.

    Cross-entropy: the log of each question's mean vote fractions. Dirichlet: fitted by Adam on at
    most ``max_rows`` (seeded sample) of ``counts``.
    """
    k = torch.tensor(np.asarray(counts), dtype=torch.float32)
    if loss == "cross_entropy":
        out = torch.zeros(k.shape[1])
        for s in question_slices(questions):
            n = k[:, s].sum(dim=1, keepdim=True)
            asked = n[:, 0] > 0
            fractions = (k[asked, s] / n[asked]).mean(dim=0) if asked.any() else torch.ones(s.stop - s.start)
            out[s] = torch.log(fractions.clamp_min(1e-4))
        return out
    if len(k) > max_rows:
        k = k[np.sort(np.random.default_rng(seed).choice(len(k), max_rows, replace=False))]
    out = torch.zeros(1, k.shape[1], requires_grad=True)
    optimizer = torch.optim.Adam([out], lr=0.1)
    for _ in range(steps):
        value = _loss_fn(loss, questions)(out.expand(len(k), -1), k)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    return out.detach()[0]


# --- the run ------------------------------------------------------------------------------------------------


def pretrain_encoder(
    corpus_dir: str | os.PathLike,
    out_folder: str | os.PathLike,
    *,
    timm_name: str,
    input_size: int,
    epochs: int,
    batch_size: int,
    lr: float,
    loss: str = "dirichlet",
    seed: int = 0,
    threads: int | None = None,
    progress: bool = True,
    weight_decay: float = 0.05,
    warmup_epochs: float = 0.0,
    val_fraction: float = 0.1,
    device: str = "auto",
    checkpoint: bool = True,
    keep_checkpoint: bool = False,
    checkpoint_every_s: float | None = None,
) -> dict[str, Any]:
    """Pre-train ``timm_name`` on a vote corpus and write its backbone to ``out_folder`` (timm local-dir layout).

    ``out_folder`` gets ``config.json``, ``model.safetensors`` (the backbone of the epoch with the
    lowest validation loss, no head) and ``pretrain.json`` (settings, corpus, per-epoch history);
    it appears only when the run succeeds. ``threads`` sets torch's CPU threads for the run only.
    With ``checkpoint`` the run saves its state after every epoch beside ``out_folder`` (a dot file,
    ``.<name>.checkpoint.pt``) and resumes from a checkpoint of the same settings and corpus; the
    file goes when the folder is written, unless ``keep_checkpoint``.
    Returns a summary of the run; its ``constant_val_loss`` is the validation loss of the best
    image-independent prediction, the bar an encoder that learned anything beats.
    """
    started = time.time()
    if loss not in LOSSES:
        raise ValueError(f"unknown pretrain loss {loss!r}; known: {', '.join(LOSSES)}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive (got {epochs}, {batch_size})")
    images, counts, manifest = open_corpus(corpus_dir)
    settings = {
        "timm_name": timm_name,
        "input_size": int(input_size),
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "weight_decay": float(weight_decay),
        "warmup_epochs": float(warmup_epochs),
        "loss": loss,
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "augment": "flips + rot90",
        "schedule": "warmup-cosine",
    }
    corpus = _corpus_record(corpus_dir, images, manifest)
    seed_everything(seed)
    dev = pick_device(device)
    with torch_threads(threads):
        train_rows, val_rows = split_rows(len(images), val_fraction, seed)
        loading = Loading.for_device(dev)
        ahead = {"workers": loading.workers, "pin_memory": loading.pin_memory}
        train = Batches(
            images, train_rows, counts[train_rows], batch_size, shuffle=True, augment=True, seed=seed + 1, **ahead
        )
        val = Batches(images, val_rows, counts[val_rows], batch_size, **ahead)
        loss_fn = _loss_fn(loss, manifest["questions"])
        bias = constant_outputs(counts[train_rows], loss, manifest["questions"], seed=seed)
        model = build_pretrainer(timm_name, input_size, counts.shape[1], bias).to(dev)
        constant_val_loss = float(loss_fn(bias.expand(len(val_rows), -1), torch.tensor(counts[val_rows])))
        log.info(
            "pre-training %s at %d px on %d images (val %d) of %s, %s loss, %d epochs of %d steps on %s",
            timm_name,
            input_size,
            len(train_rows),
            len(val_rows),
            corpus_dir,
            loss,
            epochs,
            len(train),
            dev,
        )
        checkpointer = _checkpointer(corpus_dir, out_folder, settings, checkpoint_every_s) if checkpoint else None
        history, best = fit(model, train, val, loss_fn, settings, dev, progress, checkpointer)
        summary = {
            "timm_name": timm_name,
            **{"n_images": int(len(images)), "n_train": int(len(train_rows)), "n_val": int(len(val_rows))},
            **_summary(history, best, constant_val_loss),
            **{"device": str(dev), "threads": torch.get_num_threads(), "seconds": time.time() - started},
        }
    record = {"settings": settings, "corpus": corpus, "history": history, "summary": summary}
    write_encoder_folder(out_folder, model.backbone, best.state, timm_name, input_size, record)
    if checkpointer is not None and not keep_checkpoint:
        checkpointer.remove()
    summary["seconds"] = time.time() - started
    summary["out_folder"] = str(out_folder)
    log.info(
        "pre-trained %s: train loss %.4f -> %.4f, best val loss %.4f (epoch %d); wrote %s",
        timm_name,
        summary["first_train_loss"],
        summary["last_train_loss"],
        best.val_loss,
        best.epoch,
        out_folder,
    )
    return summary


def _corpus_record(corpus_dir: str | os.PathLike, images: np.ndarray, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What pretrain.json says of the corpus: where it is, whether synthetic, its shape and questions."""
    return {
        "path": str(Path(corpus_dir).resolve()),
        "synthetic": bool(manifest.get("synthetic", False)),
        **{k: manifest[k] for k in ("kind", "n_images", "size", "seed") if k in manifest},
        "image_shape": list(images.shape[1:]),
        "questions": manifest["questions"],
    }


def _checkpointer(
    corpus_dir: str | os.PathLike, out_folder: str | os.PathLike, settings: Mapping[str, Any], every_s: float | None
) -> Checkpointer:
    """The run's checkpoint beside ``out_folder``, keyed by the settings and the corpus' labels and manifest."""
    out = Path(out_folder)
    key = params_digest(settings, (Path(corpus_dir) / "manifest.json", Path(corpus_dir) / "labels.parquet"))
    return Checkpointer(out.parent / f".{out.name}.checkpoint.pt", key, every_s)


def _summary(history: list[dict[str, Any]], best: Best, constant_val_loss: float) -> dict[str, Any]:
    """The losses of the summary: first and last, the best epoch's and the best constant prediction's."""
    return {
        "first_train_loss": history[0]["train_loss"],
        "last_train_loss": history[-1]["train_loss"],
        "first_val_loss": history[0]["val_loss"],
        "last_val_loss": history[-1]["val_loss"],
        "best_val_loss": best.val_loss,
        "constant_val_loss": constant_val_loss,
        "best_epoch": best.epoch,
        "seconds_per_epoch": float(np.mean([h["seconds"] for h in history])),
    }


def fit(
    model: Pretrainer,
    train: Batches,
    val: Batches,
    loss_fn,
    settings: Mapping[str, Any],
    device: torch.device,
    progress: bool = True,
    checkpoint: Checkpointer | None = None,
) -> tuple[list[dict[str, Any]], Best]:
    """AdamW with warm-up and cosine decay per step for ``settings["epochs"]``, through the training
    engine; (per-epoch history, best epoch: lowest validation loss, with a CPU copy of the backbone)."""
    epochs = int(settings["epochs"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    steps, warmup = epochs * len(train), int(round(settings["warmup_epochs"] * len(train)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, steps, warmup))
    fitted = engine.fit(
        model,
        train,
        engine.Validation(val),
        engine.Optimisation(loss_fn, optimizer, scheduler),
        # a lone last image breaks batch-norm backbones; its loss is not worth a step
        engine.FitSettings(epochs, Precision(device), skip_below=2, name="pretrain", progress=progress),
        stopping=engine.EarlyStopping(keep=model.backbone),
        checkpoint=checkpoint,
    )
    if fitted.best.state is None:
        raise FloatingPointError(
            f"pre-training: no epoch gave a finite validation loss (last: {fitted.history[-1]['val_loss']}); "
            f"check the corpus for NaN or infinite images, or lower the regimen's pretrain lr"
        )
    return fitted.history, fitted.best


def encoder_config(
    backbone: nn.Module, timm_name: str, input_size: int, about: Mapping[str, Any], tag: str = "alertvision-pretrain"
) -> dict:
    """The ``config.json`` of a timm local-dir folder for ``backbone`` trained at ``input_size``, with
    ``about`` (what made the weights) under its ``alertvision`` key."""
    source = dict(getattr(backbone, "pretrained_cfg", None) or {})
    pretrained_cfg = {k: source[k] for k in ("fixed_input_size", "first_conv", "classifier") if k in source}
    pretrained_cfg.update(
        {
            "input_size": [3, int(input_size), int(input_size)],
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
            "num_classes": 0,
            "tag": tag,
        }
    )
    config = {
        "architecture": timm_name,
        "num_classes": 0,
        "num_features": int(backbone.num_features),
        "pretrained_cfg": pretrained_cfg,
    }
    size_kwargs = _timm_size_kwargs(timm_name, input_size)
    if size_kwargs:
        config["model_args"] = size_kwargs  # a fixed-size model (MaxViT) is rebuilt for the size it was trained at
    config["alertvision"] = dict(about)
    return config


def write_encoder_folder(
    out_folder: str | os.PathLike,
    backbone: nn.Module,
    state: Mapping[str, torch.Tensor],
    timm_name: str,
    input_size: int,
    record: Mapping[str, Any],
) -> None:
    """Write config.json, model.safetensors (``state``, the backbone's own key names) and pretrain.json atomically."""
    from safetensors.torch import save_file  # deferred: safetensors is heavy

    about = {
        "pretrain": {
            **record["settings"],
            "corpus": record["corpus"],
            "history": record["history"],
            "summary": record["summary"],
        }
    }
    config = encoder_config(backbone, timm_name, input_size, about)
    with atomic_dir(out_folder) as tmp:
        save_file(
            {k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"), metadata={"format": "pt"}
        )
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "pretrain.json").write_text(json.dumps(dict(record), indent=2) + "\n")
