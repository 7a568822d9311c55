"""CF-AMC-SSL: EMP-SSL (16 crops, TCR + invariance) with free adversarial training (m = 3 replays, eps 8/255). Every default is a flag: see --help."""
from utils.train import main

if __name__ == "__main__":
    main("empssl", "free", epochs=10, batch_size=100, num_views=16)
