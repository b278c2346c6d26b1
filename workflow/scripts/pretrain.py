"""Snakemake adapter: pre-train one architecture's encoder on a regimen's corpus."""
from alertvision.logs import setup_logging
from alertvision.steps import pretrain

setup_logging(snakemake.log[0])
pretrain(snakemake.input.corpus, snakemake.output[0], arch_cfg=snakemake.params.arch,
         pretrain_cfg=snakemake.params.pretrain, threads=snakemake.threads, progress=False)
