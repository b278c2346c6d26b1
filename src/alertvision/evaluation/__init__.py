"""Scoring trained runs: trigger policies, tables aggregated over seeds, embeddings and their UMAP."""
