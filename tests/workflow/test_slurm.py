"""End to end on SLURM: `snakemake --profile profiles/slurm-ci` runs a tiny study on a one-node cluster."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import TINY_CONFIG, dry_run_jobs
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401 (the fixture)

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "slurm-ci"
CLUSTER_PROFILE = REPO / "profiles" / "slurm"
TARGET = "results/figure2.pdf"
#: what the sbatch test builds: ingest, split and one training run (each job costs ~14 s of status checks)
RUN_TARGET = "results/runs/ztf/image/cnn/none/f100/s0/metrics.json"
#: a training time limit (minutes) no default has, to see the config's value reach sbatch
TRAIN_RUNTIME = 17
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")]

pytestmark = pytest.mark.e2e


def _small_config() -> dict:
    """TINY_CONFIG cut to one training run: the CNN on ZTF at 100 %, without Table 2 and Figure 4."""
    config = copy.deepcopy(TINY_CONFIG)
    config["grid"].update(datasets=["ztf"], archs=["cnn"], fractions=[100])
    config["archs"] = {"cnn": {k: v for k, v in config["archs"]["cnn"].items() if k != "sweep"}}  # no sweep: time
    config["benchmark"]["enabled"] = False
    config["embed"]["enabled"] = False
    config["resources"] = {"train": {"runtime": TRAIN_RUNTIME}}
    return config


def _rule_resources(dry_run_output: str, rule: str) -> dict[str, str]:
    """The resources a dry run prints for the first job of ``rule``."""
    lines = dry_run_output.splitlines()
    start = lines.index(f"rule {rule}:")
    for line in lines[start + 1 :]:
        if line.strip().startswith("resources:"):
            return dict(item.split("=", 1) for item in line.split(":", 1)[1].strip().split(", "))
    raise AssertionError(f"no resources printed for rule {rule}")


def _write_config(folder: Path, config: dict) -> None:
    (folder / "config").mkdir(parents=True, exist_ok=True)
    (folder / "config" / "config.yaml").write_text(yaml.safe_dump(config))


def _write_study(workdir: Path) -> None:
    _write_config(workdir, _small_config())


def _snakemake(
    workdir: Path, env: dict[str, str] | None, *args: str, profile: Path = PROFILE, timeout: float
) -> subprocess.CompletedProcess:
    cmd = [*SNAKEMAKE, "--directory", str(workdir), "--profile", str(profile), *args]
    return subprocess.run(cmd, env=env, cwd=workdir, capture_output=True, text=True, timeout=timeout)


def _assert_same_run(reference: Path, workdir: Path) -> None:
    """The run of RUN_TARGET in ``workdir`` equals the one in ``reference``: history, predictions and metrics,
    timings aside."""
    import pandas as pd

    run_dir = Path(RUN_TARGET).parent
    for name in ("history.csv", "predictions.parquet"):
        read = pd.read_csv if name.endswith(".csv") else pd.read_parquet
        a, b = read(reference / run_dir / name), read(workdir / run_dir / name)
        pd.testing.assert_frame_equal(
            a.drop(columns="seconds", errors="ignore"), b.drop(columns="seconds", errors="ignore")
        )
    ma, mb = (json.loads((folder / RUN_TARGET).read_text()) for folder in (reference, workdir))
    assert {k: v for k, v in ma.items() if k != "seconds"} == {k: v for k, v in mb.items() if k != "seconds"}


class LocalRun:
    """`snakemake --cores 1 target` in ``workdir``, run in the background; its output goes to a file beside."""

    def __init__(self, workdir: Path, target: str):
        self.output = workdir.parent / f"{workdir.name}.out"
        cmd = [*SNAKEMAKE, "--directory", str(workdir), "--cores", "1", target]
        with open(self.output, "w") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

    def finish(self, timeout: float = 900) -> None:
        """Wait for it; fail the test with the end of its output unless it succeeded."""
        assert self.process.wait(timeout=timeout) == 0, self.output.read_text()[-3000:]


def test_cluster_profile_asks_for_what_the_config_says(tmp_path: Path):
    """profiles/slurm: GPU rules ask for the config's gpu, runtime and mem_mb; the rest the profile's defaults."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    _write_study(tmp_path)
    dry = _snakemake(tmp_path, None, "-n", TARGET, profile=CLUSTER_PROFILE, timeout=120)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    train = _rule_resources(dry.stdout, "train")
    assert (train["gpu"], train["runtime"], train["mem_mb"]) == ("1", str(TRAIN_RUNTIME), "16000")
    split = _rule_resources(dry.stdout, "split")
    assert "gpu" not in split and (split["runtime"], split["mem_mb"]) == ("60", "4000")


@pytest.mark.slow
def test_tiny_study_runs_every_job_through_sbatch(slurm_cluster: SlurmCluster, tmp_path: Path):  # noqa: F811
    workdir = tmp_path / "study"
    _write_study(workdir)
    env = slurm_cluster.env

    dry = _snakemake(workdir, env, "-n", RUN_TARGET, timeout=120)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    expected = dry_run_jobs(dry.stdout)
    assert expected["train"] == 1 and sum(expected.values()) >= 3, expected

    submitted_before = set(slurm_cluster.submitted_job_ids())
    start = time.monotonic()
    run = _snakemake(workdir, env, RUN_TARGET, timeout=900)
    elapsed = time.monotonic() - start
    if run.returncode != 0:
        pytest.fail(
            f"snakemake --profile {PROFILE} failed after {elapsed:.0f} s:\n{run.stdout[-4000:]}\n"
            f"{run.stderr[-6000:]}\n--- slurmctld.log\n"
            + "\n".join(slurm_cluster.slurmctld_log.read_text(errors="replace").splitlines()[-30:])
        )
    assert "test_roc_auc" in json.loads((workdir / RUN_TARGET).read_text())

    # one kept sbatch log per job, filed by rule: .snakemake/slurm_logs/rule_<name>/[<wildcards>/]<jobid>.log
    logs = list((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    per_rule = Counter(
        p.relative_to(workdir / ".snakemake" / "slurm_logs").parts[0].removeprefix("rule_") for p in logs
    )
    assert per_rule == expected, f"sbatch logs per rule {dict(per_rule)} != jobs of the dry run {dict(expected)}"

    # and slurmctld accepted exactly those batch jobs, each of which completed
    submitted = set(slurm_cluster.submitted_job_ids()) - submitted_before
    assert submitted == {int(p.stem) for p in logs}
    shown = slurm_cluster.run("scontrol", "show", "job", "-o").stdout.splitlines()
    jobs = {int(fields["JobId"]): fields for fields in (dict(re.findall(r"(\S+?)=(\S*)", line)) for line in shown)}
    assert {jobs[job]["JobState"] for job in submitted} == {"COMPLETED"}, {job: jobs.get(job) for job in submitted}

    # what sbatch asked for: the train job its runtime from the config, its memory from the profile
    by_rule = {jobs[job]["Comment"].removeprefix("rule_").split("_wildcards_")[0]: jobs[job] for job in submitted}
    assert set(by_rule) == set(expected)
    assert {name: (job["Partition"], job["TimeLimit"], job["MinMemoryNode"]) for name, job in by_rule.items()} == {
        name: (
            "debug",
            f"00:{TRAIN_RUNTIME}:00" if name == "train" else "00:10:00",
            "2000M" if name == "train" else "1000M",
        )
        for name in expected
    }
    print(f"{sum(expected.values())} SLURM jobs in {elapsed:.0f} s")


@pytest.mark.slow
def test_a_training_job_signalled_on_slurm_resumes_after_resubmission(
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
):
    """Preemption: `scancel --signal=TERM` mid-run; the job checkpoints and exits 75, Snakemake resubmits
    it (`--retries 1`), the new job resumes, and the outputs equal those of an unsignalled run."""

    config = _small_config()
    config["archs"]["cnn"]["training"] = {"epochs": 40, "patience": 40, "min_improvement": 0.0}
    reference = tmp_path / "reference"
    workdir = tmp_path / "signalled"
    for folder in (reference, workdir):
        _write_config(folder, config)
    local = LocalRun(reference, RUN_TARGET)  # alongside the cluster run

    env = slurm_cluster.env
    run = subprocess.Popen(
        [*SNAKEMAKE, "--directory", str(workdir), "--profile", str(PROFILE), "--retries", "1", RUN_TARGET],
        env=env,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    checkpoint = workdir / Path(RUN_TARGET).parent / ".checkpoint.pt"
    deadline = time.monotonic() + 600
    while not checkpoint.is_file() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert checkpoint.is_file(), "the training job never wrote a checkpoint"
    queued = slurm_cluster.run("squeue", "-h", "-o", "%i %k").stdout.split("\n")
    train_jobs = [line.split()[0] for line in queued if "rule_train" in line]
    assert len(train_jobs) == 1, queued
    slurm_cluster.run("scancel", "--signal=TERM", train_jobs[0])
    out, _ = run.communicate(timeout=900)
    assert run.returncode == 0, out[-5000:]
    local.finish()
    logs = sorted((workdir / ".snakemake" / "slurm_logs" / "rule_train").rglob("*.log"))
    assert len(logs) == 2, f"expected the train job to run twice (signalled, resubmitted): {logs}"
    resumed = (workdir / "logs" / "train" / "ztf" / "image" / "cnn" / "none" / "f100" / "s0.log").read_text()
    assert "(saved on SIGTERM)" in resumed, resumed[-3000:]  # the signal reached the training process
    _assert_same_run(reference, workdir)
    assert not checkpoint.exists()


#: the time-limit test's limit (minutes) and the warning setting of docs/when-jobs-die.md, scaled to it: SLURM
#: sends the warning at one of its 30 s limit checks, early (up to a minute, its documentation says): under
#: -t 4 with @120, 90-120 s after the job starts, after its start-up (10-25 s on an idle machine, up to 55 s on a loaded
#: one). Under -t 2 with @60 (30-60 s) a loaded machine's jobs were warned while starting up and trained a
#: few steps each; under -t 1 with @40 (0-30 s) the warning came during start-up or after a short job ended
TIME_LIMIT_MINUTES, WARNING_S = 4, 120
#: the time-limit test's training: PACED_EPOCHS epochs of at least PACED_EPOCH_S seconds each (paced by
#: `checkpoints.min_epoch_seconds`, which changes no result): 150 s however fast or idle the machine, so the
#: first job still trains at the latest warning (120 s after it starts, start-up included) and a limit check
#: later: it is always warned; a slow or loaded machine only makes the epochs longer
PACED_EPOCHS, PACED_EPOCH_S = 10, 15
#: each job trains for its 90-120 s less its start-up: 2 jobs on an idle machine, more on a loaded one (a
#: job whose start-up outlasts the warning still trains a step before it saves and exits)
TIME_LIMIT_RETRIES = 20


@pytest.mark.slow
def test_a_training_job_longer_than_its_time_limit_finishes_after_resubmissions(
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
):
    """Time limits: a train job paced to 150 s of training under a 4-minute limit, with the docs'
    `--signal=USR1@...` setting (here 120 s before the limit); SLURM warns it, it checkpoints and exits, Snakemake
    resubmits it and it resumes until done: the outputs equal those of a local run without a limit or pacing."""

    config = _small_config()
    config["archs"]["cnn"]["training"] = {"epochs": PACED_EPOCHS, "patience": 10_000, "min_improvement": 0.0}
    config["resources"] = {"train": {"runtime": TIME_LIMIT_MINUTES}}
    reference, workdir = tmp_path / "reference", tmp_path / "limited"
    _write_config(reference, config)
    _write_config(workdir, {**config, "checkpoints": {"min_epoch_seconds": PACED_EPOCH_S}})
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    # the docs' setting for profiles/slurm (docs/when-jobs-die.md), scaled to the limit
    profile["set-resources"]["train"]["slurm_extra"] = f"'--signal=USR1@{WARNING_S}'"
    profile["retries"] = TIME_LIMIT_RETRIES
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))

    local = LocalRun(reference, RUN_TARGET)  # alongside: it slows the cluster's jobs, which only adds jobs
    start = time.monotonic()
    limited = subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir), "--profile", str(tmp_path / "profile"), RUN_TARGET],
        env=slurm_cluster.env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    elapsed = time.monotonic() - start
    local.finish()
    assert limited.returncode == 0, (limited.stdout + limited.stderr)[-5000:]
    attempts = sorted((workdir / ".snakemake" / "slurm_logs" / "rule_train").rglob("*.log"))
    # what must hold: the limit stopped the job at least once (the first job outlasts the warning on any
    # machine), the warning reached the training process, which saved, and a later job resumed from it
    assert len(attempts) >= 2, f"the time limit never stopped the train job: {attempts}"
    log = (workdir / "logs" / "train" / "ztf" / "image" / "cnn" / "none" / "f100" / "s0.log").read_text()
    saved_on = re.findall(r"resuming from .*\(saved on (SIG\w+)\)", log)
    assert "SIGUSR1" in saved_on, log[-3000:]  # the profile's --signal reached the training process
    outlived = [a for a in attempts if "SIGUSR1 (SLURM's time-limit warning) received" in a.read_text()]
    assert outlived, "the job's own Snakemake died of the warning instead of waiting for the checkpoint"
    _assert_same_run(reference, workdir)
    print(f"{len(attempts)} train jobs in {elapsed:.0f} s; checkpoints saved on {saved_on}")
