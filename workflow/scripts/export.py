"""Snakemake adapter: export one run for brokers (model.onnx, model_card.md, reference.parquet, reliability.png)."""

from pathlib import Path

from alertvision.logs import start_job
from alertvision.study.steps import export

start_job(snakemake)
export(
    Path(snakemake.input.metrics).parent,
    Path(snakemake.input.alerts).parent,
    snakemake.input.split,
    Path(snakemake.output.model).parent,
    snakemake.params.export,
)
