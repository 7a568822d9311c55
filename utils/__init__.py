"""Data, training and evaluation engines, checkpoints, runs and reports."""
