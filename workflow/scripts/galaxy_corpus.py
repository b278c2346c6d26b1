"""Snakemake adapter: the SYNTHETIC galaxy corpus of a pre-training regimen."""
from alertvision.logs import setup_logging
from alertvision.steps import galaxy_corpus

setup_logging(snakemake.log[0])
galaxy_corpus(snakemake.params.corpus, snakemake.output[0], progress=False)
