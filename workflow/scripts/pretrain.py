"""Snakemake adapter: pre-train one architecture's encoder on a regimen's corpus."""

from alertvision.logs import start_job
from alertvision.study.steps import pretrain

start_job(snakemake)
pretrain(
    snakemake.input.corpus,
    snakemake.output[0],
    arch_cfg=snakemake.params.arch,
    pretrain_cfg=snakemake.params.pretrain,
    threads=snakemake.threads,
    progress=False,
    checkpoints=snakemake.config["checkpoints"],  # not a param: changing it reruns nothing
)
