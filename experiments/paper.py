"""The paper's results table, the project's own rows beside it, and the rows' optional variants."""
from dataclasses import dataclass


@dataclass(frozen=True)
class PaperRow:
    method: str
    preset: str
    regime: str
    clean: float
    pgd4: float  # PGD at 4/255 and 8/255 under the paper's own (weaker) evaluation
    pgd8: float
    minutes: float


PAPER = (
    PaperRow("simclr", "crop", "pgd", 72.86, 47.98, 16.81, 934),
    PaperRow("simclr", "patch", "pgd", 65.44, 41.85, 17.19, 934),
    PaperRow("simclr", "crop", "free", 70.25, 48.34, 24.5, 157),
    PaperRow("empssl", "patch", "pgd", 61.0, 37.65, 16.95, 530),
    PaperRow("empssl", "crop", "pgd", 76.55, 53.3, 28.49, 530),
    PaperRow("empssl", "patch", "free", 61.83, 42.28, 21.53, 97),
    PaperRow("empssl", "crop", "free", 75.88, 55.97, 33.34, 97),
)
# (method, preset, regime) -> the name the paper gives the row run with its settings
ALIASES = {("empssl", "crop", "free"): "CF-AMC-SSL"}
# The no-defence reference each method's table shows beside its robust rows.
BASELINES = ("standard",)


@dataclass(frozen=True)
class OwnRow:
    method: str
    preset: str
    regime: str
    variant: str
    flags: tuple
    name: str
    teacher: tuple = ()  # flags of a standard run of the method trained first (at the row's epochs), its --teacher


# The project's own method: CF-AMC-SSL with 4 of the 16 views left clean as anchors and every view forwarded on
# its own (BatchNorm statistics per view), at the paper's batch and replays and at the smaller batch and one more
# replay that measured best at the small scale; the evidence is in RESULTS.md.
OWN_ROWS = (
    OwnRow("empssl", "crop", "free", "anchored", ("--clean-views", "4", "--per-view-forward"),
           "Anchored CF-AMC-SSL (ours)"),
    OwnRow("empssl", "crop", "free", "anchored-b50-m4",
           ("--clean-views", "4", "--per-view-forward", "--batch-size", "50", "--replays", "4"),
           "Anchored CF-AMC-SSL, batch 50, m=4 (ours)"),
)
# The candidate distilled from a clean teacher: a standard EMP-SSL run at batch 50 (the step count that measured best
# at the small scale) for the row's epochs, then the student under free perturbations at batch 50, with one replay,
# or with two: the most replays whose teacher and student together cost fewer view passes than SimCLR free.
OWN_ROWS += tuple(
    OwnRow("empssl", "crop", "distill", f"b50-m{m}", ("--batch-size", "50", "--replays", str(m)),
           f"CF-AMC-SSL distilled from a clean teacher, batch 50, m={m} (ours)", ("--batch-size", "50"))
    for m in (1, 2)
)
# regime -> {variant: training flags}: optional rows beside each of the paper's rows of that regime
VARIANTS = {"pgd": {"isolated": ("--attack-style", "isolated")}}
