"""A training job, resolved once: what one run of the grid trains, from what, and where its files are.

:func:`train_job` turns the validated config and a run's identity into a frozen :class:`TrainJob`:
the typed model spec, the training block with every override applied, the weights it starts from
and, when its configuration is swept, the sweep's best.yaml. The Snakemake rules take
``job.inputs()`` and ``job.params()``; the train, sweep and pretrain scripts, the CLI's handlers and
the training loop take the job whole, so no step works a run out again.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from alertvision.config import masked_config
from alertvision.data import DATASET_FILES
from alertvision.schema import ConfigError
from alertvision.settings import CNN_KEYS, METADATA_KEYS, ModelSpec
from alertvision.study.plan import LAYOUT, METADATA_ONLY, MULTIMODAL, MULTIMODAL_DATASET, Layout, Run, weight_id


@dataclass(frozen=True)
class TrainJob:
    """One training run: its identity, model, training settings and files.

    ``training`` is :func:`alertvision.config.training_params` of the run (with a sweep's best values
    once :meth:`with_hyperparameters` applied them); it is read into the typed settings by the training
    loop and keys the run's checkpoint. ``run_dir`` None writes nothing (a sweep trial), and
    ``test_split`` False leaves the test split unread."""

    model: ModelSpec
    training: Mapping[str, Any]
    seed: int
    run: Run | None = None  # None: a job outside the grid (a test's, a benchmark's)
    weight_id: str | None = None
    dataset_dir: str = ""
    split_file: str = ""
    run_dir: str | None = None
    weights_dir: str | None = None
    best_yaml: str | None = None
    hyperparameters: Mapping[str, Any] | None = None
    test_split: bool = True
    info: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def local(
        cls,
        dataset_dir: str | os.PathLike,
        split_file: str | os.PathLike,
        run_dir: str | os.PathLike | None,
        *,
        model: ModelSpec | Mapping[str, Any],
        training: Mapping[str, Any],
        seed: int,
        info: Mapping[str, Any] | None = None,
        test_split: bool = True,
    ) -> "TrainJob":
        """A job outside the grid: ``model`` and ``training`` on the given files, ``info`` recorded as the
        run's identity (None: none)."""
        return cls(
            ModelSpec.of(model),
            dict(training),
            int(seed),
            dataset_dir=str(dataset_dir),
            split_file=str(split_file),
            run_dir=None if run_dir is None else str(run_dir),
            test_split=test_split,
            info=dict(info or {}),
        )

    # -- what Snakemake sees ------------------------------------------------------------------------
    def inputs(self) -> dict[str, str]:
        """The files the job reads, by name: the dataset's, the split table, the weights folder when it
        starts from weights, the sweep's best.yaml when its configuration is swept."""
        inputs = {name.split(".")[0]: f"{self.dataset_dir}/{name}" for name in DATASET_FILES}
        inputs["split"] = self.split_file
        if self.weights_dir is not None:
            inputs["weights"] = self.weights_dir
        if self.best_yaml is not None:
            inputs["best"] = self.best_yaml
        return inputs

    def params(self) -> dict[str, Any]:
        """What decides the job's outputs besides its input files (a change reruns it): plain data."""
        return {
            "run": self.run.values() if self.run is not None else None,
            "model": self.model.as_dict(),
            "training": dict(self.training),
            "weight_id": self.weight_id,
            "swept": self.best_yaml is not None,
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any], layout: Layout = LAYOUT) -> "TrainJob":
        """The job of :meth:`params` (a Snakemake job's), its files where ``layout`` puts them."""
        run = Run.from_values(params["run"])
        return cls(
            ModelSpec.from_dict(params["model"]),
            dict(params["training"]),
            run.seed,
            run,
            params["weight_id"],
            **_files(run, params["weight_id"], bool(params["swept"]), layout),
        )

    # -- views and variants -------------------------------------------------------------------------
    @property
    def run_info(self) -> dict[str, Any]:
        """What the run records of its identity in metrics.json and model.pt (and the sweep's values)."""
        info = {**(self.run.values() if self.run is not None else {}), **dict(self.info)}
        if self.hyperparameters is not None:
            info.update(hyperparameters=dict(self.hyperparameters), hyperparameters_from=str(self.best_yaml))
        return info

    def for_seed(self, seed: int, layout: Layout = LAYOUT) -> "TrainJob":
        """The same job for another seed, in that seed's run folder."""
        run = dataclasses.replace(self.run, seed=int(seed))
        return dataclasses.replace(self, seed=int(seed), run=run, run_dir=layout.run_dir(run))

    def with_hyperparameters(self, values: Mapping[str, Any]) -> "TrainJob":
        """The job with a sweep's values over the configured ones: the CNN's own keys into the model
        spec, the rest into the training settings; recorded in :attr:`run_info`."""
        model = {k: v for k, v in values.items() if k in CNN_KEYS}
        training = {k: v for k, v in values.items() if k not in CNN_KEYS}
        return dataclasses.replace(
            self,
            model=self.model.with_values(**model) if model else self.model,
            training={**dict(self.training), **training},
            hyperparameters=dict(values),
        )

    def trial(self, values: Mapping[str, Any], seed: int) -> "TrainJob":
        """A sweep trial of the job: its sampled ``values`` applied, trained with the sweep's ``seed``,
        nothing written, the test split unread."""
        job = self.with_hyperparameters(values)
        return dataclasses.replace(job, seed=int(seed), run=None, run_dir=None, test_split=False, hyperparameters=None)


def _files(run: Run, weight: str | None, swept: bool, layout: Layout) -> dict[str, Any]:
    return {
        "dataset_dir": layout.dataset_dir(run.dataset),
        "split_file": layout.split_file(run.dataset, run.fraction),
        "run_dir": layout.run_dir(run),
        "weights_dir": layout.weights_dir(run.regimen, run.arch) if weight is not None else None,
        "best_yaml": layout.sweep_file("best.yaml", run) if swept else None,
    }


def is_swept(config: Mapping[str, Any], arch: str, modality: str) -> bool:
    """Whether a configuration is swept (Figure 3's production baseline never is)."""
    return sweep_params(config, arch, modality=modality)["trials"] > 0


def train_job(config: Mapping[str, Any], run: Run | Mapping[str, Any], layout: Layout = LAYOUT) -> TrainJob:
    """The job of ``run`` (a :class:`Run`, Snakemake's wildcards or a dict of its six fields) under the
    validated ``config``: the one place a run is worked out."""
    if not isinstance(run, Run):
        values = dict(run)
        values.setdefault("seed", config["grid"]["seeds"][0])  # a cell of all its seeds (train_seeds)
        run = Run.from_values(values)
    weight = weight_id(config, run.regimen, run.arch)
    return TrainJob(
        model_spec(config, run.arch, run.modality, run.regimen, run.dataset),
        training_params(config, run.arch, run.modality),
        run.seed,
        run,
        weight,
        **_files(run, weight, is_swept(config, run.arch, run.modality), layout),
    )


def sweep_job(config: Mapping[str, Any], run: Run | Mapping[str, Any], layout: Layout = LAYOUT) -> TrainJob:
    """The job a configuration's sweep trials vary (``run``'s seed aside): :func:`train_job` without the
    best.yaml the sweep itself writes."""
    return dataclasses.replace(train_job(config, run, layout), best_yaml=None)


# --------------------------------------------------------------------------- a run's settings from the config


def is_production_baseline(config: Mapping[str, Any], arch: str, modality: str) -> bool:
    """Whether a run is Figure 3's baseline as BTSbot's production model: a multi-modal CNN (kind cnn) while
    ``multimodal.cnn_baseline`` is ``production`` (not swept; ``multimodal.baseline_training`` on top of its
    training block)."""
    spec = config["archs"].get(arch)
    return (
        modality == MULTIMODAL
        and spec is not None
        and spec.get("kind") == "cnn"
        and config.get("multimodal", {}).get("cnn_baseline", "production") == "production"
    )


def training_params(config: Mapping[str, Any], arch: str, modality: str = "image") -> dict[str, Any]:
    """The training block with the architecture's overrides applied (and, for Figure 3's production
    baseline, ``multimodal.baseline_training``); an image model's leaves out the metadata branch's keys
    (so that they rerun only multi-modal runs)."""
    params = dict(config["training"])
    params.update(config["archs"].get(arch, {}).get("training", {}))
    if arch == METADATA_ONLY:
        params.update(config.get("multimodal", {}).get("metadata_training", {}))
    if is_production_baseline(config, arch, modality):
        params.update(config["multimodal"].get("baseline_training", {}))
    if modality != MULTIMODAL:
        for key in METADATA_KEYS:
            params.pop(key, None)
    return params


def model_spec(
    config: Mapping[str, Any], arch: str, modality: str, regimen: str = "none", dataset: str = MULTIMODAL_DATASET
) -> ModelSpec:
    """What the model factory builds for a run: the ``archs.<name>`` block (``{kind: none}`` and the
    ``head`` of ``multimodal.metadata_head`` for the metadata-only model) plus ``modality``, the
    regimen's ``input_norm`` and, for multi-modal runs, ``metadata_fill`` and, for a timm backbone, its
    ``timm_head`` on ``dataset`` (see :func:`multimodal_timm_head`)."""
    mm = config.get("multimodal", {})
    if arch == METADATA_ONLY:
        spec = {"kind": "none", "head": mm.get("metadata_head", "um_nn")}
    else:
        spec = dict(config["archs"][arch])
    spec.pop("training", None)
    spec.pop("sweep", None)
    spec["modality"] = modality
    if arch != METADATA_ONLY:
        spec["input_norm"] = config["regimens"][regimen]["input_norm"]
    if modality == MULTIMODAL:
        spec["metadata_fill"] = mm["metadata_fill"]
        if spec["kind"] == "timm":
            spec["timm_head"] = multimodal_timm_head(mm.get("timm_head", "btsbot"), dataset)
    return ModelSpec.from_dict(spec)


def multimodal_timm_head(setting: str, dataset: str) -> str:
    """What a multi-modal model keeps of a timm backbone's own head (``multimodal.timm_head``): ``btsbot``
    follows BTSbot's ``mm_ConvNeXt``, ``flatten`` alone on ZTF stamps (63x63 ends at a 1x1 map) and
    ``pool_norm`` (global pool, LayerNorm, flatten) on Legacy Survey images; ``pool_norm`` keeps timm's
    pool and norm on both. Backbones whose timm head has no norm (MaxViT) are the same either way."""
    if setting == "btsbot":
        return "pool_norm" if dataset == "ls" else "flatten"
    if setting != "pool_norm":
        raise ConfigError(f"config key multimodal.timm_head: {setting!r} is not one of btsbot, pool_norm")
    return setting


def sweep_params(
    config: Mapping[str, Any], arch: str, masked: bool = False, modality: str | None = None
) -> dict[str, Any]:
    """The sweep block with the architecture's overrides applied (nested blocks merged one level deep);
    ``masked``: the storage URL's password masked (what a Snakemake param may hold: params are stored in
    ``.snakemake/metadata``; the job reads the real URL from the config or the environment). With
    ``modality``, Figure 3's production baseline (:func:`is_production_baseline`) has 0 trials: not swept."""
    if masked:
        config = masked_config(config)
    params = copy.deepcopy(dict(config["sweep"]))
    for key, value in config["archs"].get(arch, {}).get("sweep", {}).items():
        if isinstance(value, Mapping) and isinstance(params.get(key), Mapping):
            params[key] = {**params[key], **value}
        else:
            params[key] = value
    if modality is not None and is_production_baseline(config, arch, modality):
        params["trials"] = 0
    return params


def figure3_policies(config: Mapping[str, Any]) -> list[str]:
    """The trigger policies Figure 3 draws (``policies.figure3``: one name or a list), as a list."""
    chosen = config["policies"]["figure3"]
    return [chosen] if isinstance(chosen, str) else list(chosen)
