"""SimCLR (2 crops, NT-Xent) with free adversarial training (m = 3 replays, eps 8/255). Defaults: the paper's row,
declared in utils/engine/config.py (SCRIPTS); every one a flag (see --help)."""
from utils.engine.train import main

if __name__ == "__main__":
    main("simclr", "free")
