"""Training: batches from the memory-mapped images, the learning-rate schedule, and the loop."""
