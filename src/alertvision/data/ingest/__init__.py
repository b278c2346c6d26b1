"""Ingesters of real ZTF alerts: each writes the data contract (see :mod:`alertvision.data.contract`)."""
