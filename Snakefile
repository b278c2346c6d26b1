# alertvision: the study of Rehemtulla et al. as one DAG. This file only sets up, includes the
# stages and defines `all`; logic lives in src/alertvision, rules in workflow/rules/.
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import min_version

min_version("9.0")

# The workflow ships its library: jobs import the src/ beside this file, whichever environment
# (local, conda, a cluster node) runs them.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)


envvars:
    "PYTHONPATH",


from alertvision.config import ConfigError, check_config_files, shadowed_settings, validate_config
from alertvision.slurm import outlive_time_limit_warning

# Inside a SLURM job this Snakemake waits out the time-limit warning its training job is answering.
outlive_time_limit_warning()

# The embedded default, unless config files are given on the command line: they replace it (merged in
# order, the schema filling every key they leave out), so a study config means the same wherever it
# runs and whatever config/config.yaml holds, and `alertvision --config FILE` resolves it the same way.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


try:
    # Snakemake's own loader keeps the last of a key given twice: ours refuses it, naming key and line
    check_config_files(workflow.configfiles)
    validate_config(config)  # fills every default in place; a bad value stops here naming its key
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration: {exc}")
for message in shadowed_settings(config, workflow.config_settings.config, "--config"):
    logger.warning(message)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/config.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/cutouts.smk"
include: "workflow/rules/splits.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/sweeps.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/benchmark.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/export.smk"


rule all:
    default_target: True
    input:
        all_targets(),
