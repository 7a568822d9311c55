"""Linear probe on a frozen SimCLR encoder: clean accuracy and accuracy under PGD at 4/255 and 8/255."""
from utils.evaluate import main

if __name__ == "__main__":
    main("simclr")
