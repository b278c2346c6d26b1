"""Table 2's files: ``table2.csv``, ``.md`` (with the compute estimate) and ``.tex``."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from alertvision.atomic import write_csv, write_text
from alertvision.reports.table2.estimate import StudyWorkload, format_estimate, study_hours
from alertvision.reports.table2.settings import Row

log = logging.getLogger(__name__)

# --- Table 2 files ---------------------------------------------------------------------------------

#: (column, header, format) of the markdown and LaTeX tables.
TABLE_COLUMNS = (
    ("arch", "Architecture", "{}"),
    ("timm_name", "timm name", "{}"),
    ("input_size", "Input", "{}"),
    ("mode", "Mode", "{}"),
    ("device", "Device", "{}"),
    ("threads", "Threads", "{}"),
    ("batch_size", "Batch", "{}"),
    ("alerts_per_s", "Alerts/s", "{:,.1f}"),
    ("speedup", "x paper", "{:.2f}"),
    ("peak_memory_mb", "Peak memory (MB)", "{:,.0f}"),
    ("max_score_dev", "Max score dev.", "{:.1e}"),
    ("alerts_timed", "Alerts timed", "{:,}"),
    ("scope", "Scope", "{}"),
    ("setup", "Setup", "{}"),
)
TABLE_NOTE = (
    "Paper: test split read from the memory-mapped images, batch 32, float32 eager, median of the "
    "timed trials after a warm-up pass. Production: the fastest measured candidate whose sigmoid scores "
    "stay within the tolerance of the float32 scores (max score dev. is over every measured alert). "
    "Alerts timed: alerts scored in each timed trial; scope: what they are. 'test split': the ZTF "
    "dataset's whole test split, each alert once per trial (benchmark.min_alerts / gpu_min_alerts: "
    "null); 'test split cycled to N': the split repeated to N alerts in whole batches (min_alerts: N, "
    "for a split too small to time). "
    "Peak memory: torch.cuda.max_memory_allocated (the mode's weights and working memory) on GPU rows, "
    "the process's peak RSS on CPU rows. Threads: CPU threads of the process."
)


#: Columns printed with "{}" but right-aligned.
INTEGER_COLUMNS = ("input_size", "threads", "batch_size")


def table_frame(rows: Iterable[Row | Mapping[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame in Table 2's column order."""
    records = [asdict(r) if isinstance(r, Row) else dict(r) for r in rows]
    return pd.DataFrame(records, columns=list(Row.__dataclass_fields__))


def to_markdown(df: pd.DataFrame) -> str:
    """Table 2 as a markdown table."""
    lines = [
        "| " + " | ".join(h for _, h, _ in TABLE_COLUMNS) + " |",
        "|" + "|".join("---:" if f != "{}" or c in INTEGER_COLUMNS else "---" for c, _, f in TABLE_COLUMNS) + "|",
    ]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(f.format(r[c]).replace("|", "/") for c, _, f in TABLE_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"), ("_", r"\_"), ("$", r"\$")):
        text = text.replace(a, b)
    return text


def to_latex(df: pd.DataFrame) -> str:
    """Table 2 as a LaTeX tabular (booktabs-free: \\hline only)."""
    align = "".join("r" if f != "{}" or c in INTEGER_COLUMNS else "l" for c, _, f in TABLE_COLUMNS)
    lines = [
        f"\\begin{{tabular}}{{{align}}}",
        "\\hline",
        " & ".join(_tex(h) for _, h, _ in TABLE_COLUMNS) + r" \\",
        "\\hline",
    ]
    for _, r in df.iterrows():
        lines.append(" & ".join(_tex(f.format(r[c])) for c, _, f in TABLE_COLUMNS) + r" \\")
    lines += ["\\hline", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def markdown_report(df: pd.DataFrame, estimate: str | None = None) -> str:
    """table2.md: the table, what it measured, and the compute estimate."""
    parts = ["# Table 2: inference throughput and memory", "", to_markdown(df), TABLE_NOTE, ""]
    if estimate:
        parts += [estimate]
    return "\n".join(parts)


def write_table2(
    rows: Iterable[Row | Mapping[str, Any]],
    training: Sequence[Mapping[str, Any]],
    out_csv: str | os.PathLike | None,
    out_md: str | os.PathLike | None,
    out_tex: str | os.PathLike | None = None,
    workload: StudyWorkload | None = None,
) -> pd.DataFrame:
    """Write Table 2 (csv, md with the compute estimate of ``workload`` below, tex) atomically; returns the
    table. No estimate without a workload or training records."""
    df = table_frame(rows)
    estimate = format_estimate(study_hours(training, workload), workload) if training and workload else None
    if estimate:
        log.info("%s", estimate)
    if out_csv is not None:
        write_csv(out_csv, df)
    if out_md is not None:
        write_text(out_md, markdown_report(df, estimate))
    if out_tex is not None:
        write_text(out_tex, to_latex(df))
    return df
