"""EMP-SSL (16 crops, TCR + invariance) with standard training. Defaults: the seed's row, declared in utils/methods/; every one a flag (see --help)."""
from utils.train import main

if __name__ == "__main__":
    main("empssl", "standard")
