"""A synthetic, BTS-like alert stream made from a small physical model (labelled synthetic everywhere)."""
