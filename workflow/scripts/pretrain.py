"""Snakemake adapter: pre-train one architecture's encoder on a regimen's corpus."""

from alertvision.training.signals import record_stop_signals_until_exit

# first, and until the process exits: a time-limit warning or a preemption during start-up or after the
# outputs are written is recorded instead of killing the process (see workflow/scripts/train.py)
record_stop_signals_until_exit(snakemake.config["checkpoints"]["enabled"])

from alertvision.logs import start_job  # noqa: E402
from alertvision.study.steps import pretrain  # noqa: E402

start_job(snakemake)
pretrain(
    snakemake.input.corpus,
    snakemake.output[0],
    arch_block=snakemake.params.arch,
    pretrain_cfg=snakemake.params.pretrain,
    threads=snakemake.threads,
    progress=False,
    checkpoints=snakemake.config["checkpoints"],  # not a param: changing it reruns nothing
)
