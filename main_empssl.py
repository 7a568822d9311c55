"""EMP-SSL (16 crops, TCR + invariance) with standard training. Defaults: the paper's row, declared in
utils/engine/config.py (SCRIPTS); every one a flag (see --help)."""
from utils.engine.train import main

if __name__ == "__main__":
    main("empssl", "standard")
