"""EMP-SSL (16 crops, TCR + invariance) with PGD adversarial training (5 steps, eps 8/255). Every default is a flag: see --help."""
from utils.train import main

if __name__ == "__main__":
    main("empssl", "pgd", epochs=30, batch_size=100, num_views=16)
