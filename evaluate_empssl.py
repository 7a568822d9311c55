"""Evaluate an EMP-SSL encoder: fine-tune a classifier (--protocol slf, alf or aff), then clean, PGD-20 and
AutoAttack accuracy."""
from utils.evaluation.evaluate import main

if __name__ == "__main__":
    main("empssl")
