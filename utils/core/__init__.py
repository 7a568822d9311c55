"""The layer every other one stands on: errors, flags, registries, ranks, checkpoints, datasets, files and the
code version. It imports nothing of the project but the building blocks."""
