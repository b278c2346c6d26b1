"""Stop signals: SIGTERM (preemption) and SIGUSR1 (SLURM's warning before a time limit) recorded instead of
killing a training process, which then saves its checkpoint and exits with :data:`PREEMPTED_EXIT`.

Imports nothing heavy, so that a training job's script installs the handlers before it imports torch: a
warning that arrives while the job starts up is recorded, not fatal.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import threading
from typing import Iterator

log = logging.getLogger(__name__)


class Preempted(SystemExit):
    """The run stopped on a signal (SLURM's warning before the time limit, SIGTERM on preemption) after
    writing its checkpoint; the process exits with :data:`PREEMPTED_EXIT` and a rerun resumes."""

    def __init__(self, signum: int):
        super().__init__(PREEMPTED_EXIT)
        self.signum = signum


#: the exit status of a run stopped by a signal after its checkpoint (EX_TEMPFAIL: try again later)
PREEMPTED_EXIT = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


#: the list the outermost active :func:`stop_signals` block, or :func:`record_stop_signals_until_exit`,
#: records into (None: neither is active)
_recording: list[int] | None = None


def _record_into(received: list[int]) -> None:
    global _recording

    def record(signum, frame):
        log.warning("received %s: the run stops at its next checkpoint", signal.Signals(signum).name)
        received.append(signum)

    for s in STOP_SIGNALS:
        signal.signal(s, record)
    _recording = received


@contextlib.contextmanager
def stop_signals(enabled: bool = True) -> Iterator[list[int]]:
    """While the block runs, SIGTERM and SIGUSR1 are recorded in the list it yields instead of killing
    the process (main thread only; elsewhere, or when not ``enabled``, nothing changes).

    Blocks nest: an inner block yields the outer block's list (or that of
    :func:`record_stop_signals_until_exit`). A training run holds one block from before it reads its data
    until its outputs are written, so a signal that arrives outside the epoch loop is not lost (the loop
    stops at its next step) and one that arrives after the last epoch lets the outputs be written instead
    of discarding a finished run.
    """
    global _recording
    if _recording is not None:
        yield _recording
        return
    received: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield received
        return
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    _record_into(received)
    try:
        yield received
    finally:
        _recording = None
        for s, handler in before.items():
            signal.signal(s, handler)


def record_stop_signals_until_exit(enabled: bool = True) -> list[int]:
    """What a training job's script does first: SIGTERM and SIGUSR1 recorded (as in :func:`stop_signals`)
    from now until the process exits; the list they are recorded in (main thread only; elsewhere, or when
    not ``enabled``, nothing changes and the list stays empty).

    Installed before the script's imports, a warning while the job starts up stops the run after its first
    step instead of killing the process; kept until the process exits (ignored from its exit hooks on), a
    warning after the outputs are written (while the interpreter shuts down) cannot kill a finished job,
    which Snakemake would then fail and delete (the checkpoint already gone, the retry would start again
    from the first epoch).
    """
    if _recording is not None:
        return _recording
    received: list[int] = []
    if enabled and threading.current_thread() is threading.main_thread():
        _record_into(received)
        # Python puts the default action (death) back for its handlers as it shuts down, after the exit hooks
        atexit.register(ignore_stop_signals)
    return received


def ignore_stop_signals() -> None:
    """SIGTERM and SIGUSR1 ignored from now on: what a finished job does as it exits."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
