"""SimCLR (2 crops, NT-Xent) with standard training. Every default is a flag: see --help."""
from utils.train import main

if __name__ == "__main__":
    main("simclr", "standard", epochs=500, batch_size=512)
