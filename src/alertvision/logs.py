"""Logging set-up shared by the CLI and the Snakemake scripts."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from alertvision.atomic import clean_stale_temporaries

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(log_file: str | os.PathLike | None = None, level: int = logging.INFO) -> None:
    """Send alertvision's log records to stderr and, when given, to ``log_file``.

    Snakemake jobs pass their ``log`` path; stderr (progress bars, warnings) is redirected there
    too so that a job's whole story is in one file under ``logs/``.
    """
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_file, "a", buffering=1)  # noqa: SIM115 - lives for the process
        sys.stderr = stream
        handler: logging.Handler = logging.StreamHandler(stream)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    logging.captureWarnings(True)


def start_job(job: Any) -> None:
    """What every Snakemake script does first: log to the job's log file, and remove the temporaries a
    killed earlier attempt left beside the job's outputs (a killed ingest leaves one the size of its
    dataset)."""
    setup_logging(job.log[0])
    removed = clean_stale_temporaries(list(job.output))
    if removed:
        logging.getLogger(__name__).info("removed %d temporary file(s) an interrupted earlier run left", removed)
