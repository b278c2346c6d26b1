"""A one-node SLURM cluster on this machine for the tests (Debian's slurm-wlm and munge).

The session-scoped fixture ``slurm_cluster`` installs the packages when they are missing (as root,
with apt-get), starts munged, slurmctld and slurmd in the background without systemd, and stops
everything it started when the session ends. It skips, naming the reason, where it cannot install
the packages; a cluster that is installed but does not come up is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from apt import apt_install

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
COMMANDS = ["slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "munged", "munge", "unmunge"]
PARTITION = "debug"
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_SOCKET_DIR = Path("/run/munge")
SYSTEM_SLURM_CONF = Path("/etc/slurm/slurm.conf")
#: where a configless slurmd links its fetched config; clients without SLURM_CONF read it there
CONFIGLESS_LINK = Path("/run/slurm/conf")
#: memory left to the OS and the test process when sizing the node (MB)
MEMORY_MARGIN_MB = 1024


@dataclass
class SlurmCluster:
    """A running one-node cluster: its config, partition, daemon logs and the client environment.

    slurmd runs configless (it fetches the config from slurmctld and links it at /run/slurm/conf)
    because the jobstep plugin drops SLURM_CONF from the environment of the srun it starts inside
    each job; that srun finds the config through the link, the client commands here through ``env``.
    """

    conf: Path
    partition: str
    node: str
    cpus: int
    memory_mb: int
    root: Path
    env: dict[str, str] = field(repr=False)

    @property
    def slurmctld_log(self) -> Path:
        return self.root / "slurmctld.log"

    @property
    def slurmd_log(self) -> Path:
        return self.root / "slurmd.log"

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster."""
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout)

    def submitted_job_ids(self) -> list[int]:
        """Ids of every batch job slurmctld accepted, from its log."""
        ids = []
        for line in self.slurmctld_log.read_text(errors="replace").splitlines():
            if "_slurm_rpc_submit_batch_job:" in line and "JobId=" in line:
                ids.append(int(line.split("JobId=")[1].split()[0]))
        return ids


def _missing_commands() -> list[str]:
    return [cmd for cmd in COMMANDS if shutil.which(cmd) is None]


def ensure_slurm_installed() -> None:
    """Skip the test unless SLURM and munge are (or can be made) available and runnable here."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        pytest.skip("a local SLURM cluster needs Linux")
    if os.geteuid() != 0:
        pytest.skip("a local SLURM cluster needs root (slurmd runs jobs as their users; apt-get installs it)")
    missing = _missing_commands()
    if not missing:
        return
    if shutil.which("apt-get") is None:
        pytest.skip(f"SLURM commands missing ({', '.join(missing)}) and no apt-get to install {' '.join(PACKAGES)}")
    reason = apt_install(PACKAGES)
    if reason:
        pytest.skip(f"cannot install SLURM: {reason}")
    missing = _missing_commands()
    if missing:
        pytest.skip(f"SLURM commands still missing after installing {' '.join(PACKAGES)}: {', '.join(missing)}")
    if SYSTEM_SLURM_CONF.exists():
        pytest.skip(
            f"{SYSTEM_SLURM_CONF} exists: srun inside the test's jobs would use that cluster's config "
            "(the slurm-jobstep plugin drops SLURM_CONF), so a private test cluster cannot run here"
        )


def _munge_works() -> bool:
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        if cred.returncode != 0:
            return False
        return subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _start_munged(log: Path) -> subprocess.Popen | None:
    """Start munged as the munge user unless one already answers; the process started, or None."""
    if _munge_works():
        return None
    if not MUNGE_KEY.exists():
        MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
        MUNGE_KEY.write_bytes(os.urandom(1024))
        shutil.chown(MUNGE_KEY, "munge", "munge")
        MUNGE_KEY.chmod(0o400)
    MUNGE_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_SOCKET_DIR, "munge", "munge")
    MUNGE_SOCKET_DIR.chmod(0o755)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            ["munged", "--foreground"],
            user="munge",
            group="munge",
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _wait(_munge_works, 20, f"munged did not answer; see {log}")
    return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return max(512, int(line.split()[1]) // 1024 - MEMORY_MARGIN_MB)
    raise RuntimeError("no MemTotal in /proc/meminfo")


def write_slurm_conf(root: Path, node: str, cpus: int, memory_mb: int, port: int) -> Path:
    """A one-node slurm.conf under ``root`` (state, spool, pid and log files there too), slurmctld on ``port``."""
    for sub in ("state", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "slurm.conf"
    conf.write_text(f"""\
ClusterName=alertvision-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={port}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SlurmctldParameters=enable_configless
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "slurmctld.log"}
SlurmdLogFile={root / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# squeue must still list finished jobs when the executor polls (its squeue status check needs this)
MinJobAge=300
KillWait=5
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _wait(predicate, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise RuntimeError(message)


def _stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def _tail(path: Path, n: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else f"({path} missing)"


def _start_daemons(cluster: SlurmCluster, port: int, daemons: list[subprocess.Popen]) -> None:
    """Start slurmctld, then a configless slurmd, appending each to ``daemons``; wait for an idle node."""
    configless_env = {k: v for k, v in cluster.env.items() if k != "SLURM_CONF"}

    def check_alive() -> None:
        for proc in daemons:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")

    def ctld_up() -> bool:
        check_alive()
        return "UP" in cluster.run("scontrol", "ping", timeout=10).stdout

    def node_idle() -> bool:
        check_alive()
        out = cluster.run("sinfo", "-h", "-N", "-o", "%N %t", timeout=10)
        return out.returncode == 0 and f"{cluster.node} idle" in out.stdout

    for daemon, args, env in (
        ("slurmctld", ["-f", str(cluster.conf)], cluster.env),
        ("slurmd", ["--conf-server", f"127.0.0.1:{port}"], configless_env),
    ):
        with open(cluster.root / f"{daemon}.out", "ab") as fh:
            daemons.append(
                subprocess.Popen(
                    [daemon, "-D", *args],
                    env=env,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        if daemon == "slurmctld":  # slurmd fetches its config from slurmctld, so that must answer first
            _wait(ctld_up, 30, "slurmctld did not answer `scontrol ping` within 30 s")
    _wait(node_idle, 60, "the SLURM node did not become idle within 60 s")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Iterator[SlurmCluster]:
    """A running one-node SLURM cluster (partition ``debug``); its client env points SLURM_CONF at it."""
    ensure_slurm_installed()
    root = tmp_path_factory.mktemp("slurm")
    node = socket.gethostname().split(".")[0]
    cpus = len(os.sched_getaffinity(0))
    memory_mb = _memory_mb()
    port = _free_port()
    conf = write_slurm_conf(root, node, cpus, memory_mb, port)
    cluster = SlurmCluster(
        conf=conf,
        partition=PARTITION,
        node=node,
        cpus=cpus,
        memory_mb=memory_mb,
        root=root,
        env={**os.environ, "SLURM_CONF": str(conf)},
    )

    had_run_dir = CONFIGLESS_LINK.parent.exists()
    munged: subprocess.Popen | None = None
    daemons: list[subprocess.Popen] = []
    try:
        try:
            munged = _start_munged(root / "munged.log")
            _start_daemons(cluster, port, daemons)
        except RuntimeError as exc:
            pytest.fail(
                "\n".join(
                    [str(exc)]
                    + [
                        f"--- {name}\n{_tail(root / name)}"
                        for name in ("munged.log", "slurmctld.log", "slurmctld.out", "slurmd.log", "slurmd.out")
                    ]
                )
            )
        yield cluster
    finally:
        if daemons:
            try:
                cluster.run("scancel", "--partition", PARTITION, timeout=15)
                _wait(
                    lambda: not cluster.run("squeue", "-h", timeout=10).stdout.strip(),
                    30,
                    "jobs still listed after scancel",
                )
            except (RuntimeError, OSError, subprocess.TimeoutExpired):
                pass  # the daemons are stopped below regardless
        for proc in reversed(daemons):
            _stop(proc)
        if CONFIGLESS_LINK.is_symlink() and str(root) in os.readlink(CONFIGLESS_LINK):
            CONFIGLESS_LINK.unlink()
            if not had_run_dir and not any(CONFIGLESS_LINK.parent.iterdir()):
                CONFIGLESS_LINK.parent.rmdir()
        if munged is not None:
            _stop(munged)
