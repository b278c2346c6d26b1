"""Snakemake adapter: the Legacy Survey dataset paired with the ZTF alerts."""

from pathlib import Path

from alertvision.logs import start_job
from alertvision.study.steps import ls_dataset

start_job(snakemake)
config = {
    "legacysurvey": snakemake.params.legacysurvey,
    "data": snakemake.params.data,
    "splits": snakemake.params.splits,
}
ls_dataset(config, Path(snakemake.input.alerts).parent, Path(snakemake.output.alerts).parent)
