"""Offline pre-training: the synthetic galaxy corpus, the Zoobot losses, the pretrain run and its weights folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from scipy import stats

from alertvision.atomic import atomic_dir
from alertvision.models import build_model
from alertvision.models.weights import resolve_weights
from alertvision.synthetic.galaxies import (
    QUESTIONS,
    VOLUNTEERS,
    galaxy_corpus,
    galaxy_images,
    galaxy_truth,
    galaxy_votes,
    vote_columns,
    write_galaxy_corpus,
)
from alertvision.training.pretrain import (
    build_pretrainer,
    concentrations_from_logits,
    constant_outputs,
    cross_entropy_fraction_loss,
    dirichlet_multinomial_loss,
    pretrain_encoder,
    write_encoder_folder,
)

HEAD = {"dense1": 16, "dense2": 8, "dropout": 0.1}
TINY = "test_convnext"  # timm's 0.2M-parameter ConvNeXt: the same code path as convnext_pico, fast on 2 cores
# one thread: two threads on two busy shared cores spend most of their time waiting for each other
RUN = {
    "timm_name": TINY,
    "input_size": 32,
    "epochs": 3,
    "batch_size": 16,
    "lr": 2e-3,
    "seed": 4,
    "threads": 1,
    "progress": False,
    "device": "cpu",
}


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- the corpus ----------------------------------------------------------------------------------------


def test_corpus_is_deterministic_and_image_i_depends_on_seed_and_i_only():
    images, votes, questions = galaxy_corpus(12, 32, seed=5)
    assert images.shape == (12, 3, 32, 32) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.max() > 0.5
    assert questions == QUESTIONS and list(votes.columns) == vote_columns()
    again, votes_again, _ = galaxy_corpus(12, 32, seed=5)
    np.testing.assert_array_equal(images, again)
    pd.testing.assert_frame_equal(votes, votes_again)
    np.testing.assert_array_equal(galaxy_corpus(5, 32, seed=5)[0], images[:5])
    np.testing.assert_array_equal(galaxy_images([10, 3], 32, seed=5), images[[10, 3]])
    pd.testing.assert_frame_equal(galaxy_votes([10, 3], seed=5), votes.iloc[[10, 3]].reset_index(drop=True))
    assert not np.array_equal(galaxy_corpus(12, 32, seed=6)[0], images)


def test_votes_follow_the_decision_tree_and_the_generating_parameters():
    votes, truth = galaxy_votes(range(400), seed=1), galaxy_truth(range(400), seed=1)

    def asked(q):
        return votes[[f"{q}_{a}" for a in QUESTIONS[q]]].sum(axis=1)

    # every volunteer answers the first question; later ones only those the tree sends there
    assert (asked("smooth-or-featured") == VOLUNTEERS).all()
    assert (asked("disk-edge-on") == votes["smooth-or-featured_featured"]).all()
    assert (asked("has-spiral-arms") == votes["disk-edge-on_no"]).all()
    assert (asked("bar") == votes["disk-edge-on_no"]).all()
    assert (asked("merging") == VOLUNTEERS - votes["smooth-or-featured_artifact"]).all()
    assert (asked("bar") == 0).any()  # questions nobody reached occur, and the loss must handle them

    def fraction(column, rows):
        q = column.split("_")[0]
        n = asked(q)[rows]
        return float((votes.loc[rows, column][n > 0] / n[n > 0]).mean())

    disks, ellipticals = truth.kind == "disk", truth.kind == "elliptical"
    assert fraction("smooth-or-featured_featured", disks) > fraction("smooth-or-featured_featured", ellipticals) + 0.3
    face_on = disks & ~truth.edge_on
    assert fraction("disk-edge-on_yes", truth.edge_on) > 0.8 > 0.2 > fraction("disk-edge-on_yes", face_on)
    no_arms = face_on & (truth.arms == 0)
    assert fraction("has-spiral-arms_yes", truth.arms > 0) > fraction("has-spiral-arms_yes", no_arms) + 0.3
    assert fraction("bar_strong", truth.bar == "strong") > fraction("bar_strong", truth.bar == "no") + 0.2
    assert fraction("merging_major", truth.merger == "major") > 0.5 > fraction("merging_major", truth.merger == "none")
    assert fraction("smooth-or-featured_artifact", truth.kind == "artifact") > 0.5


def _axis_ratio(image: np.ndarray, level: float = 0.25) -> float:
    """Minor/major axis ratio of the r-band isophote at ``level`` of the peak (second moments of the pixels above)."""
    y, x = np.nonzero(image[1] > level * image[1].max())
    lo, hi = np.linalg.eigvalsh(np.cov(np.vstack([x, y])))
    return float(np.sqrt(lo / hi))


def test_morphologies_look_different():
    truth = galaxy_truth(range(300), seed=2)
    edge_on = truth.index[truth.edge_on & (truth.merger == "none")][:15].tolist()
    ellipticals = truth.index[(truth.kind == "elliptical") & (truth.merger == "none")][:15].tolist()
    images = galaxy_images(edge_on + ellipticals, 48, seed=2)
    ratios = np.array([_axis_ratio(im) for im in images])
    assert np.median(ratios[:15]) < 0.4 < 0.6 < np.median(ratios[15:])
    # bulges are red, disks blue: z/g light of ellipticals above that of face-on disks
    face_on = truth.index[(truth.kind == "disk") & (truth.cos_i > 0.7) & (truth.merger == "none")][:15].tolist()
    disks = galaxy_images(face_on, 48, seed=2)

    def colour(ims):  # channels are red, green, blue = z, r, g
        return float(np.median([im[0].sum() / im[2].sum() for im in ims]))

    assert colour(images[15:]) > colour(disks) * 1.1


def test_write_galaxy_corpus_streams_the_same_images_to_disk(tmp_path):
    manifest = write_galaxy_corpus(tmp_path / "corpus", n=20, size=32, seed=3, progress=False)
    folder = tmp_path / "corpus"
    assert manifest == json.loads((folder / "manifest.json").read_text())
    assert manifest["synthetic"] is True and manifest["kind"] == "galaxy-corpus"
    assert (manifest["n_images"], manifest["size"], manifest["seed"]) == (20, 32, 3)
    assert manifest["questions"] == QUESTIONS
    images = np.load(folder / "images.npy", mmap_mode="r")
    np.testing.assert_array_equal(images, galaxy_images(range(20), 32, seed=3))
    labels = pd.read_parquet(folder / "labels.parquet")
    assert list(labels.columns) == ["image", *vote_columns()] and labels["image"].tolist() == list(range(20))
    pd.testing.assert_frame_equal(labels.drop(columns="image"), galaxy_votes(range(20), seed=3))
    assert len(pd.read_parquet(folder / "truth.parquet")) == 20
    assert _leftovers(tmp_path) == []


def test_atomic_dir_keeps_the_old_folder_when_the_block_fails(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("complete")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "half.txt").write_text("partial")
        raise RuntimeError("crash")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["old.txt"] and _leftovers(tmp_path) == []
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "new.txt").write_text("complete")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["new.txt"] and _leftovers(tmp_path) == []


# --- the losses ----------------------------------------------------------------------------------------------


def test_dirichlet_multinomial_loss_matches_scipy():
    questions = {"a": ["x", "y", "z"], "b": ["yes", "no"], "c": ["p", "q"]}
    counts = np.array([[30, 8, 2, 5, 3, 0, 0], [1, 20, 19, 0, 0, 4, 9]], dtype=float)
    conc = np.array([[20.0, 5.0, 1.5, 2.0, 3.0, 1.0, 7.0], [1.2, 9.0, 9.0, 50.0, 2.0, 3.0, 4.0]])
    loss = dirichlet_multinomial_loss(torch.tensor(conc), torch.tensor(counts), questions, reduction="none")
    expected = []
    for k, a in zip(counts, conc, strict=True):
        log_p = stats.dirichlet_multinomial.logpmf(k[:3], a[:3], k[:3].sum())
        if k[3:5].sum() > 0:  # a two-answer question is beta-binomial
            log_p += stats.betabinom.logpmf(k[3], k[3:5].sum(), a[3], a[4])
        if k[5:].sum() > 0:
            log_p += stats.betabinom.logpmf(k[5], k[5:].sum(), a[5], a[6])
        expected.append(-log_p)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
    # a question nobody answered adds exactly nothing
    alone = dirichlet_multinomial_loss(torch.tensor(conc[:1, :3]), torch.tensor(counts[:1, :3]), [3], "none")
    with_empty = dirichlet_multinomial_loss(
        torch.tensor(conc[:1, [0, 1, 2, 5, 6]]), torch.tensor(counts[:1, [0, 1, 2, 5, 6]]), [3, 2], "none"
    )
    assert float(with_empty) == pytest.approx(float(alone), abs=1e-6)
    assert float(dirichlet_multinomial_loss(torch.tensor(conc), torch.tensor(counts), questions)) == pytest.approx(
        np.mean(expected), rel=1e-5
    )


def test_dirichlet_loss_prefers_concentrations_matching_the_fractions():
    counts = torch.tensor([[32.0, 6.0, 2.0]])
    matching = torch.tensor([[80.0, 15.0, 5.0]])
    wrong = torch.tensor([[5.0, 15.0, 80.0]])
    flat = torch.tensor([[1.0, 1.0, 1.0]])
    loss = [float(dirichlet_multinomial_loss(c, counts, [3])) for c in (matching, flat, wrong)]
    assert loss[0] < loss[1] < loss[2]
    assert torch.all(
        (concentrations_from_logits(torch.tensor([-50.0, 0.0, 50.0])) - torch.tensor([1.0, 50.5, 100.0])).abs() < 1e-4
    )


def test_cross_entropy_fraction_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5, 0.5]])
    counts = torch.tensor([[6.0, 3.0, 1.0, 0.0, 0.0]])  # the second question has no votes
    p = torch.softmax(logits[0, :3], dim=0)
    expected = -(0.6 * torch.log(p[0]) + 0.3 * torch.log(p[1]) + 0.1 * torch.log(p[2]))
    assert float(cross_entropy_fraction_loss(logits, counts, [3, 2])) == pytest.approx(float(expected), rel=1e-6)
    good = cross_entropy_fraction_loss(torch.log(torch.tensor([[0.6, 0.3, 0.1]])), counts[:, :3], [3])
    bad = cross_entropy_fraction_loss(torch.log(torch.tensor([[0.1, 0.3, 0.6]])), counts[:, :3], [3])
    assert float(good) < float(bad)


def test_the_head_starts_at_the_best_constant_prediction():
    counts = galaxy_votes(range(200), seed=0).to_numpy(dtype=np.float32)
    k = torch.tensor(counts)
    fitted = constant_outputs(counts, "dirichlet", QUESTIONS)
    at_zero = dirichlet_multinomial_loss(concentrations_from_logits(torch.zeros_like(k)), k, QUESTIONS)
    at_fit = dirichlet_multinomial_loss(concentrations_from_logits(fitted.expand(len(k), -1)), k, QUESTIONS)
    assert float(at_fit) < float(at_zero) - 5
    ce = constant_outputs(counts, "cross_entropy", QUESTIONS)
    first = counts[:, :3]
    np.testing.assert_allclose(
        torch.softmax(ce[:3], 0).numpy(), (first / first.sum(1, keepdims=True)).mean(0), rtol=1e-5
    )
    head = build_pretrainer(TINY, 32, len(fitted), fitted).head
    assert torch.equal(head.bias.detach(), fitted) and not head.weight.detach().any()


# --- the run --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrain") / "corpus"
    write_galaxy_corpus(folder, n=96, size=32, seed=0, progress=False)
    return folder


@pytest.fixture(scope="module")
def pretrained(corpus):
    out = corpus.parent / "encoder"
    return out, pretrain_encoder(corpus, out, **RUN)


def test_pretrain_lowers_the_loss_and_records_the_run(pretrained, corpus):
    out, summary = pretrained
    assert summary["first_train_loss"] > summary["last_train_loss"]
    assert np.isfinite(summary["constant_val_loss"])
    assert summary["n_images"] == 96 and summary["n_val"] == 10 and summary["n_train"] == 86
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "pretrain.json"]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == TINY and config["num_classes"] == 0
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    record = config["alertvision"]["pretrain"]
    assert record["corpus"]["synthetic"] is True and record["loss"] == "dirichlet"
    assert [h["epoch"] for h in record["history"]] == [1, 2, 3]
    assert all(np.isfinite(h["val_loss"]) for h in record["history"])
    assert json.loads((out / "pretrain.json").read_text())["history"] == record["history"]
    assert _leftovers(corpus.parent) == []


def test_pretrain_is_deterministic_on_cpu(pretrained, corpus, tmp_path):
    out, _ = pretrained
    pretrain_encoder(corpus, tmp_path / "again", **RUN)
    first, second = load_file(out / "model.safetensors"), load_file(tmp_path / "again" / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_cross_entropy_pretraining_runs(corpus, tmp_path):
    summary = pretrain_encoder(corpus, tmp_path / "ce", **{**RUN, "epochs": 2, "loss": "cross_entropy"})
    assert np.isfinite(summary["last_val_loss"]) and summary["first_train_loss"] > 0


def test_the_saved_backbone_loads_for_fine_tuning(pretrained):
    out, _ = pretrained
    saved = load_file(out / "model.safetensors")
    weights = resolve_weights(f"local-dir:{out}")
    assert weights.architecture == TINY
    arch = {"kind": "timm", "timm_name": TINY, "input_size": 32, "input_scale": 1.0}
    model = build_model(arch, HEAD, weights=weights)
    backbone = model.backbone.state_dict()
    assert backbone.keys() == saved.keys()  # the head is not saved; every backbone tensor is
    assert all(torch.equal(backbone[k], saved[k]) for k in saved)


def test_a_fixed_size_backbone_is_rebuilt_for_its_size(tmp_path):
    """MaxViT-like models (fixed input size) load at the size they were pre-trained at."""
    torch.manual_seed(0)
    backbone = build_pretrainer("test_maxvit", 32, 13).backbone
    state = {k: v.clone() for k, v in backbone.state_dict().items()}
    record = {"settings": {}, "corpus": {}, "history": [], "summary": {}}
    write_encoder_folder(tmp_path / "maxvit", backbone, state, "test_maxvit", 32, record)
    config = json.loads((tmp_path / "maxvit" / "config.json").read_text())
    assert config["model_args"] == {"img_size": 32}
    model = build_model(
        {"kind": "timm", "timm_name": "test_maxvit", "input_size": 32},
        HEAD,
        weights=resolve_weights(f"local-dir:{tmp_path / 'maxvit'}"),
    )
    loaded = model.backbone.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_a_failing_run_names_the_file_and_leaves_no_folder(corpus, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("labels.parquet", "manifest.json"):
        (broken / name).write_bytes((corpus / name).read_bytes())
    with pytest.raises(FileNotFoundError, match="images.npy"):
        pretrain_encoder(broken, tmp_path / "out", **RUN)
    assert not (tmp_path / "out").exists()
    with pytest.raises(RuntimeError, match="Unknown model"):
        pretrain_encoder(corpus, tmp_path / "out", **{**RUN, "timm_name": "no_such_model"})
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []
