"""What the study reports: Figures 2-4, Table 2 (throughput and compute estimate), the outlier page."""
