"""alertvision: train and compare vision models for alert classification (Rehemtulla et al.)."""

__version__ = "0.1.0"
