"""Training: batches from the memory-mapped images, the learning-rate schedule, the one epoch loop
(``engine``) with its checkpoints, a fine-tuning run (``loop``), encoder pre-training (``pretrain``)."""
