"""Snakemake adapter: the SYNTHETIC galaxy corpus of a pre-training regimen."""

from alertvision.logs import start_job
from alertvision.study.steps import galaxy_corpus

start_job(snakemake)
galaxy_corpus(snakemake.params.corpus, snakemake.output[0], progress=False)
