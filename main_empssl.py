"""EMP-SSL (16 crops, TCR + invariance) with standard training. Every default is a flag: see --help."""
from utils.train import main

if __name__ == "__main__":
    main("empssl", "standard", epochs=30, batch_size=100, num_views=16)
