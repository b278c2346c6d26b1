"""The training input pipeline: batches made ahead in worker threads are the batches of the in-process
design, draw for draw and bit for bit, and so is a training run on CPU."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from alertvision.safeload import load_tensors
from alertvision.study.jobs import TrainJob, training_params
from alertvision.training.data import Batches, Flips, ReadAhead, gather, gather_then_augment
from alertvision.training.loop import train_run


@pytest.fixture()
def images(tmp_path) -> np.ndarray:
    """A memory-mapped (N, 3, 7, 7) float32 .npy of distinct values, opened as the dataset contract does."""
    path = tmp_path / "images.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(53, 3, 7, 7))
    out[:] = np.random.default_rng(3).standard_normal(out.shape, dtype=np.float32)
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def _reference_epoch(images, rows, labels, batch_size, generator, min_batch, metadata=None) -> list:
    """An epoch as the design before the loader made it: permutation, then per batch gather and augment."""
    order = torch.randperm(len(rows), generator=generator).numpy()
    out = []
    for start in range(0, len(rows), batch_size):
        pos = order[start : start + batch_size]
        if len(pos) < min_batch:
            break
        x = gather_then_augment(images, rows[pos], generator)
        if metadata is not None:
            x = (x, torch.from_numpy(metadata[rows[pos]].astype(np.float32)))
        out.append((x, torch.from_numpy(labels[pos].astype(np.float32)), pos))
    return out


def _same(a, b) -> bool:
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a.dtype == b.dtype and torch.equal(a, b)


@pytest.mark.parametrize("workers", [0, 1, 3])
@pytest.mark.parametrize("with_metadata", [False, True])
def test_batches_are_the_in_process_designs_draw_for_draw(images, workers, with_metadata):
    """Two epochs (the generator goes on from where the first left it), the last batch of one row skipped."""
    rows = np.random.default_rng(0).permutation(len(images))[:49]
    labels = (np.arange(49) % 3 == 0).astype(np.float32)
    metadata = np.random.default_rng(1).standard_normal((len(images), 5)) if with_metadata else None
    batches = Batches(
        images, rows, labels, 8, shuffle=True, augment=True, seed=11, metadata=metadata, min_batch=2, workers=workers
    )
    generator = torch.Generator().manual_seed(11)
    for _ in range(2):
        got = list(batches)
        expected = _reference_epoch(images, rows, labels, 8, generator, 2, metadata)
        assert len(got) == len(expected) == len(batches) == 6
        for (x, y, pos), (ex, ey, epos) in zip(got, expected):
            assert np.array_equal(pos, epos) and _same(y, ey) and _same(x, ex)
        assert torch.equal(batches.generator.get_state(), generator.get_state())


def test_a_run_loads_ahead_on_cuda_only():
    from alertvision.training.data import Loading

    assert Loading.for_device(torch.device("cuda")) == Loading(workers=1, pin_memory=True)
    assert Loading.for_device(torch.device("cpu")) == Loading(workers=0, pin_memory=False)
    assert Loading.for_device(torch.device("cpu"), 2) == Loading(workers=2, pin_memory=False)


def test_gather_flips_and_turns_as_the_tensor_augmentation_does(images):
    """All 16 draws (hflip, vflip, turns), each image to the bit what flip and rot90 on tensors give."""
    combos = np.array(list(itertools.product([False, True], [False, True], range(4))))
    rows = np.arange(16) * 3 % len(images)
    flips = Flips(combos[:, 0].astype(bool), combos[:, 1].astype(bool), combos[:, 2].astype(np.int64))
    got = gather(images, rows, flips)
    for i, (h, v, k) in enumerate(combos):
        x = torch.from_numpy(np.array(images[rows[i]]))
        x = x.flip(-1) if h else x
        x = x.flip(-2) if v else x
        assert torch.equal(torch.from_numpy(got[i]), torch.rot90(x, int(k), dims=(-2, -1))), (h, v, k)
    assert got.dtype == np.float32 and not np.shares_memory(got, images)


def test_a_consumer_that_stops_early_leaves_no_thread_running(images):
    import threading

    batches = Batches(images, np.arange(len(images)), np.zeros(len(images)), 4, shuffle=True, augment=True, workers=2)
    it = iter(batches)
    next(it)
    it.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("batches")]


def test_read_ahead_knows_the_rows_of_a_whole_memory_map_only(images, tmp_path):
    hints = ReadAhead(images)
    assert hints.fd is not None and hints.row_bytes == images[0].nbytes
    assert hints.offset + len(images) * hints.row_bytes == (tmp_path / "images.npy").stat().st_size
    hints(np.array([3, 0, 3]))  # advice only: nothing to see but that it is accepted
    assert ReadAhead(images[5:]).fd is None and ReadAhead(np.zeros((4, 3, 7, 7))).fd is None


def test_training_with_the_loader_ahead_is_bit_identical(tiny_datasets, quick_split_file, tmp_path):
    """Two epochs on CPU, batches made in the training thread and in 2 worker threads ahead: the same
    weights, history and scores."""
    config = tiny_datasets["config"]
    training = {**training_params(config, "cnn"), "epochs": 2, "patience": 2, "min_improvement": 0.0, "threads": 1}
    metrics = {}
    for workers in (0, 2):
        metrics[workers] = train_run(
            TrainJob.local(
                tiny_datasets["ztf"],
                quick_split_file,
                tmp_path / str(workers),
                model=config["archs"]["cnn"],
                training=training,
                seed=0,
            ),
            progress=False,
            checkpoint=False,
            loader_workers=workers,
        )
    a, b = (load_tensors(tmp_path / str(w) / "model.pt", fix="a test file")["state_dict"] for w in (0, 2))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("history.csv", "predictions.parquet"):
        ha, hb = ((tmp_path / str(w) / name).read_bytes() for w in (0, 2))
        if name == "history.csv":  # the seconds column differs
            ha, hb = (_without_seconds(h) for h in (ha, hb))
        assert ha == hb, name
    same = ("test_roc_auc", "test_loss", "val_loss_best", "best_epoch")
    assert all(metrics[0][k] == metrics[2][k] for k in same)


def _without_seconds(csv: bytes) -> list[str]:
    import io

    import pandas as pd

    table = pd.read_csv(io.BytesIO(csv))
    return table.drop(columns="seconds").to_csv(index=False, float_format="%.17g").splitlines()


class _Crash(RuntimeError):
    """Stops a run right after a checkpoint, as a kill would."""


def test_a_run_killed_inside_an_epoch_with_the_loader_ahead_resumes_to_the_in_process_outputs(
    tiny_datasets, quick_split_file, tmp_path, monkeypatch
):
    """The worker threads draw the plans ahead of the step; a checkpoint inside an epoch still replays the
    epoch's order and augmentation from its start: killed after its 3rd save (every step) and rerun with 2
    workers, the run ends as one made in the training thread without a stop."""
    from alertvision.training.checkpoint import Checkpointer

    config = tiny_datasets["config"]
    training = {**training_params(config, "cnn"), "epochs": 2, "patience": 2, "min_improvement": 0.0, "threads": 1}
    training["batch_size"] = 16

    def run(out, workers, **extra):
        return train_run(
            TrainJob.local(
                tiny_datasets["ztf"], quick_split_file, out, model=config["archs"]["cnn"], training=training, seed=0
            ),
            progress=False,
            loader_workers=workers,
            **extra,
        )

    run(tmp_path / "whole", 0)
    save, saves = Checkpointer.save, []

    def save_then_die(self, state):
        save(self, state)
        saves.append(state["within"])
        if len(saves) == 3:
            raise _Crash

    monkeypatch.setattr(Checkpointer, "save", save_then_die)
    with pytest.raises(_Crash):
        run(tmp_path / "killed", 2, checkpoint_every_s=1e-9)
    monkeypatch.undo()
    assert saves[-1] is not None and saves[-1]["step"] >= 1  # inside an epoch
    run(tmp_path / "killed", 2, checkpoint_every_s=1e-9)
    a, b = (load_tensors(tmp_path / d / "model.pt", fix="a test file")["state_dict"] for d in ("whole", "killed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ha, hb = (_without_seconds((tmp_path / d / "history.csv").read_bytes()) for d in ("whole", "killed"))
    assert ha == hb
