"""The two-scale comparison that decides whether a multi-crop row wins: the candidate, the rows it must beat, the
scales and seeds, where each seed's evaluation lies, and the margins of the goal."""
from pathlib import Path

SCALES = ("small", "medium")
SEEDS = (0, 1, 2)
CANDIDATE = "crop-empssl-free-anchored-b50-m4"
BASELINES = ("crop-empssl-free", "crop-simclr-free")
# The cost ceiling: the candidate trains in no more minutes than this row.
COST_CEILING = "crop-simclr-free"
# metric -> the least lead of the candidate's mean over each baseline's mean, in points
MARGINS = {"aa4": 3.0, "aa8": 3.0, "pgd4": 2.0, "clean": 0.0}
# metric -> (column title, the evaluation's field, its radius)
METRICS = {"clean": ("Clean", "clean", None), "pgd4": ("PGD-20 4/255", "pgd", "4/255"),
           "aa4": ("AA 4/255", "autoattack", "4/255"), "pgd8": ("PGD-20 8/255", "pgd", "8/255"),
           "aa8": ("AA 8/255", "autoattack", "8/255")}


def result_path(results: Path, scale: str, seed: int, row: str) -> Path:
    """Seed 0's evaluation of a row in ``results/<scale>/``, seed N's in ``results/<scale>/seed-<N>/``: the folders
    ``utils.reproduce --scale <scale> --seed N`` results are copied to."""
    return Path(results) / scale / ("" if seed == 0 else f"seed-{seed}") / f"{row}.json"
