"""The data layer: the data contract, the triplet and features, splits, sources and their ingesters, Legacy
Survey cutouts."""
