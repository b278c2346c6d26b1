"""What a sweep leaves for the seed runs and for a person: best.yaml, trials.csv, a plot, a summary table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from alertvision.atomic import atomic_path, write_csv, write_text
from alertvision.study.plan import parse_study_name
from alertvision.sweeps.storage import OWNER_ATTR
from alertvision.sweeps.worker import SURPLUS_ATTR, state_counts

CONFIG_KEYS = ("dataset", "modality", "arch", "regimen", "fraction")


def write_best(
    study: optuna.Study | None,
    out_yaml: str | os.PathLike,
    defaults: Mapping[str, Any],
    *,
    name: str | None = None,
    storage: str | None = None,
    objective: str = "val_roc_auc",
    requested: int | None = None,
) -> dict[str, Any]:
    """Write best.yaml: the training overrides the seed runs use (``params``), the study value, counts.

    ``defaults`` are the training block's values of the searched keys; without a study (sweep.trials 0)
    or a completed trial they are the params, with value null and a note saying so.
    """
    name = name or (study.study_name if study is not None else None)
    counts = state_counts(study) if study is not None else {}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if study is not None else []
    best = {
        "study": name,
        "config": parse_study_name(name) if name else None,
        "storage": storage,
        "objective": objective,
        "direction": study.direction.name.lower() if study is not None else None,
        "value": None,
        "params": dict(defaults),
        "source": "defaults",
        "best_trial": None,
        "trials_requested": requested,
        "n_trials": counts.get("complete", 0),
        "n_pruned": counts.get("pruned", 0),
        "n_failed": counts.get("fail", 0),
        "n_surplus": counts.get("surplus", 0),
    }
    if complete:
        trial = study.best_trial
        best.update(
            value=float(trial.value),
            params={**dict(defaults), **trial.params},
            source="best_trial",
            best_trial=trial.number,
        )
        best["note"] = f"the best of {len(complete)} completed trials by {objective}"
    elif study is None:
        best["note"] = "sweep.trials is 0: the config's default hyperparameters, no sweep ran"
    else:
        best["note"] = "no completed trial: the config's default hyperparameters"
    write_text(out_yaml, yaml.safe_dump(_plain(best), sort_keys=False))
    return best


def load_best_params(best_yaml: str | os.PathLike) -> dict[str, Any]:
    """The training overrides a best.yaml holds (apply them over ``training_params``)."""
    return dict(yaml.safe_load(Path(best_yaml).read_text())["params"])


def _plain(obj: Any) -> Any:
    """numpy scalars -> Python, so that yaml.safe_dump takes them."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj.item() if isinstance(obj, np.generic) else obj


def trials_frame(study: optuna.Study | None) -> pd.DataFrame:
    """One row per trial: number, state, value (complete trials), last intermediate value, epochs, duration,
    retry_of, worker, param_*; given-back trials have state SURPLUS."""
    rows = []
    for t in study.get_trials(deepcopy=False) if study is not None else []:
        surplus = bool(t.user_attrs.get(SURPLUS_ATTR))
        duration = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        owner = t.system_attrs.get(OWNER_ATTR) or {}
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        # Optuna stores a pruned trial's last intermediate value as its value: not the objective, so left out
        value = t.value if t.state == TrialState.COMPLETE else None
        rows.append(
            {
                "number": t.number,
                "state": "SURPLUS" if surplus else t.state.name,
                "value": value,
                "last_intermediate": last,
                "epochs": len(t.intermediate_values),
                "duration_s": duration,
                "datetime_start": t.datetime_start,
                "datetime_complete": t.datetime_complete,
                "retry_of": t.system_attrs.get("failed_trial"),
                "worker": f"{owner['host']}:{owner['pid']}" if owner else None,
                **{f"param_{k}": v for k, v in t.params.items()},
            }
        )
    columns = [
        "number",
        "state",
        "value",
        "last_intermediate",
        "epochs",
        "duration_s",
        "datetime_start",
        "datetime_complete",
        "retry_of",
        "worker",
    ]
    return pd.DataFrame(rows, columns=columns + sorted({c for r in rows for c in r if c.startswith("param_")}))


def write_trials_csv(study: optuna.Study | None, out_csv: str | os.PathLike) -> pd.DataFrame:
    """Write trials.csv (see :func:`trials_frame`); an empty table, with its header, without a study."""
    frame = trials_frame(study)
    write_csv(out_csv, frame)
    return frame


def sweep_plot(
    trials_csv: str | os.PathLike, out: str | os.PathLike, *, title: str | None = None, direction: str = "maximize"
) -> None:
    """Draw value by trial and the best so far (PNG or PDF by the suffix of ``out``); pruned trials as ticks."""
    import matplotlib  # deferred: matplotlib is heavy

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: matplotlib is heavy
    from matplotlib.transforms import blended_transform_factory  # deferred: matplotlib is heavy

    trials = pd.read_csv(trials_csv)
    done = trials[trials["state"] == "COMPLETE"].sort_values("number")
    pruned = trials[trials["state"] == "PRUNED"]
    fig, ax = plt.subplots(figsize=(5, 3.2), layout="constrained")
    if len(done):
        best = done["value"].cummax() if direction == "maximize" else done["value"].cummin()
        ax.scatter(done["number"], done["value"], s=14, color="tab:blue", label="trial")
        ax.step(done["number"], best, where="post", color="tab:red", label="best so far")
    if len(pruned):
        ax.scatter(
            pruned["number"],
            np.zeros(len(pruned)),
            marker="|",
            s=60,
            color="grey",
            label="pruned",
            transform=blended_transform_factory(ax.transData, ax.transAxes),
            clip_on=False,
        )
    if not len(done):
        ax.text(0.5, 0.5, "no completed trials", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("trial")
    ax.set_ylabel("objective value")
    ax.set_title(title or "sweep", fontsize=9)
    if len(done) or len(pruned):
        ax.legend(fontsize=7, loc="best")
    suffix = Path(out).suffix.lstrip(".") or "png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=suffix, dpi=120)
    plt.close(fig)


def summary_table(best_yamls: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per study from its best.yaml: the configuration, value, counts and best params."""
    rows = []
    for path in best_yamls:
        best = yaml.safe_load(Path(path).read_text())
        config = best.get("config") or {}
        rows.append(
            {
                **{k: config.get(k) for k in CONFIG_KEYS},
                "study": best["study"],
                "value": best["value"],
                "objective": best["objective"],
                "source": best["source"],
                "best_trial": best["best_trial"],
                "n_trials": best["n_trials"],
                "n_pruned": best["n_pruned"],
                "n_failed": best["n_failed"],
                **{f"param_{k}": v for k, v in (best.get("params") or {}).items()},
                "best_yaml": str(path),
            }
        )
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["_f"] = pd.to_numeric(frame["fraction"], errors="coerce")
        frame = frame.sort_values(["dataset", "modality", "arch", "regimen", "_f"]).drop(columns="_f")
    return frame.reset_index(drop=True)


def write_summary(best_yamls: Iterable[str | os.PathLike], out_csv: str | os.PathLike) -> pd.DataFrame:
    """Write the sweeps' summary table from the studies' best.yaml files."""
    frame = summary_table(best_yamls)
    write_csv(out_csv, frame)
    return frame
