"""What the workflow does differently inside a SLURM job."""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading

#: the signal the docs (docs/when-jobs-die.md) ask SLURM to send before a time limit (`--signal=USR1@...`)
WARNING_SIGNAL = signal.SIGUSR1


def outlive_time_limit_warning() -> bool:
    """Inside a SLURM job, make this process (the job's own Snakemake) note SIGUSR1 instead of dying of it.

    SLURM sends `--signal` to every process of the job step. Snakemake does not handle SIGUSR1, so it
    died at once and SLURM tore the step down while the training process under it was still writing its
    checkpoint. Noted instead, Snakemake waits for the training process, which saves its state, exits with
    status 75, and the job fails as a whole (which `retries` resubmits). A handler, unlike SIG_IGN, is not
    inherited by the processes Snakemake starts. Returns whether the handler was installed (in a SLURM job,
    on the main thread).
    """
    if "SLURM_JOB_ID" not in os.environ or threading.current_thread() is not threading.main_thread():
        return False

    def note(signum: int, frame: object) -> None:
        print(
            f"alertvision: {signal.Signals(signum).name} (SLURM's time-limit warning) received; "
            "waiting for the running job to save its checkpoint and stop",
            file=sys.stderr,
            flush=True,
        )

    signal.signal(WARNING_SIGNAL, note)
    # ignored from the exit hooks on: Python puts the default action (death) back for its handlers as it shuts
    # down, and a warning then killed a job that had just finished (Snakemake failed it and deleted its outputs)
    atexit.register(signal.signal, WARNING_SIGNAL, signal.SIG_IGN)
    return True
