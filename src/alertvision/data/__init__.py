"""The data layer: the data contract, the triplet and features, splits, sources and their ingesters, Legacy
Survey cutouts."""

# The data contract's files (see :mod:`alertvision.data.contract`), named here, where reading them costs no
# pandas: the study plan and Snakemake's parse ask for them.
ALERTS_FILE = "alerts.parquet"
IMAGES_FILE = "images.npy"
MANIFEST_FILE = "manifest.json"
DATASET_FILES = (ALERTS_FILE, IMAGES_FILE, MANIFEST_FILE)
