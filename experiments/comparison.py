"""The two-scale comparison that decides whether a multi-crop row wins: the candidates, the rows they must beat, the
scales and seeds, where each seed's evaluation lies, and the margins of the goal."""
from pathlib import Path

from experiments.ablations import ABLATIONS
from experiments.ablations import SEEDS as ABLATION_SEEDS
from experiments.runner import RESULT

SCALES = ("small", "medium")
SEEDS = (0, 1, 2)
# A row is a row of ``utils.reproduce`` or an entry of ``experiments.ablations`` (its seeds the entries with the
# seeds' suffixes); the candidates are the project's multi-crop rows, each measured against every baseline.
CANDIDATES = ("crop-empssl-free-anchored-b50-m4", "free-clean-views-4-per-view-bn-batch-25-m-4", "free-2-epochs",
              "crop-empssl-distill-b50-m2")
BASELINES = ("crop-empssl-free", "crop-simclr-free")
# The cost ceiling: a candidate trains in no more minutes than this row.
COST_CEILING = "crop-simclr-free"
# metric -> the least lead of the candidate's mean over each baseline's mean, in points
MARGINS = {"aa4": 3.0, "aa8": 3.0, "pgd4": 2.0, "clean": 0.0}
# metric -> (column title, the evaluation's field, its radius)
METRICS = {"clean": ("Clean", "clean", None), "pgd4": ("PGD-20 4/255", "pgd", "4/255"),
           "aa4": ("AA 4/255", "autoattack", "4/255"), "pgd8": ("PGD-20 8/255", "pgd", "8/255"),
           "aa8": ("AA 8/255", "autoattack", "8/255")}
# scale -> the folder, under the results, of the ablations run at that scale (``utils.ablate --scale``)
ABLATION_FOLDERS = {"small": "ablations", "medium": "ablations-medium"}
ABLATION_NAMES = {ab.name for ab in ABLATIONS}


def result_path(results: Path, scale: str, seed: int, row: str) -> Path:
    """Where seed ``seed``'s evaluation of ``row`` at ``scale`` lies. A reproduce row's: seed 0's in
    ``results/<scale>/``, seed N's in ``results/<scale>/seed-<N>/`` (the folders ``utils.reproduce --scale <scale>
    --seed N`` results are copied to). An ablation's: its AutoAttack evaluation in the seed's entry's folder, copied
    from ``utils.ablate --scale <scale>``'s output."""
    if row in ABLATION_NAMES:
        entry = f"{row}{ABLATION_SEEDS[seed][0]}"
        return Path(results) / ABLATION_FOLDERS[scale] / entry / "aa" / RESULT
    return Path(results) / scale / ("" if seed == 0 else f"seed-{seed}") / f"{row}.json"
