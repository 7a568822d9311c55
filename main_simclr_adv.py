"""SimCLR (2 crops, NT-Xent) with PGD adversarial training (5 steps, eps 8/255). Every default is a flag: see --help."""
from utils.train import main

if __name__ == "__main__":
    main("simclr", "pgd", epochs=500, batch_size=512)
