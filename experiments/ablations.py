"""The ablation plan behind RESULTS.md's study of adversarial multi-crop training, as rows of data: each entry is
a training script (method, regime) with flags, trained at the ``small`` scale and evaluated with the diagnostic
protocol of ``utils.ablate``. Adding an ablation is a line here."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Ablation:
    name: str
    method: str
    regime: str
    flags: tuple = ()
    aa: bool = False  # also AutoAttack: the candidates for the project's own method
    epochs: int = 0  # instead of the scale's (the script's default x 0.1)


SEEDS = (("", ()), ("-seed-1", ("--seed", "1")), ("-seed-2", ("--seed", "2")))  # (name suffix, flags) of seeds 0 to 2
ISO = ("--attack-style", "isolated")
ORIG = ("--attack-style", "original")
ABLATIONS = (
    Ablation("empssl-standard", "empssl", "standard"),
    Ablation("empssl-standard-tcr-coef-0.25", "empssl", "standard", ("--tcr-coef", "0.25")),
    Ablation("pgd-original", "empssl", "pgd", ("--attack-style", "original")),
    Ablation("pgd-isolated", "empssl", "pgd", ISO),
    Ablation("pgd-isolated-eval-bn", "empssl", "pgd", (*ISO, "--attack-bn", "eval")),
    Ablation("pgd-original-eval-bn", "empssl", "pgd", ("--attack-style", "original", "--attack-bn", "eval")),
    Ablation("pgd-isolated-clean-views-1", "empssl", "pgd", (*ISO, "--clean-views", "1")),
    Ablation("pgd-isolated-clean-views-4", "empssl", "pgd", (*ISO, "--clean-views", "4")),
    Ablation("pgd-isolated-clean-branch", "empssl", "pgd", (*ISO, "--clean-weight", "1")),
    Ablation("pgd-isolated-per-view-bn", "empssl", "pgd", (*ISO, "--per-view-forward")),
    Ablation("pgd-isolated-clean-views-4-per-view-bn", "empssl", "pgd",
             (*ISO, "--clean-views", "4", "--per-view-forward")),
    Ablation("pgd-isolated-alpha-1", "empssl", "pgd", (*ISO, "--alpha", "1/255")),
    Ablation("pgd-isolated-eps-2", "empssl", "pgd", (*ISO, "--eps", "2/255", "--alpha", "0.0025")),
    Ablation("pgd-isolated-eps-4", "empssl", "pgd", (*ISO, "--eps", "4/255", "--alpha", "0.005")),
    Ablation("pgd-isolated-invariance-attack", "empssl", "pgd", (*ISO, "--attack-tcr-coef", "0")),
    Ablation("pgd-isolated-2-views", "empssl", "pgd", (*ISO, "--num-views", "2")),
    Ablation("pgd-isolated-tcr-coef-0.25", "empssl", "pgd", (*ISO, "--tcr-coef", "0.25")),
    Ablation("pgd-isolated-z-dim-128", "empssl", "pgd", (*ISO, "--z-dim", "128")),
    Ablation("pgd-isolated-ntxent", "empssl", "pgd", (*ISO, "--invariance", "ntxent", "--tcr-coef", "0")),
    Ablation("simclr-pgd-isolated", "simclr", "pgd", ISO),
    Ablation("simclr-pgd-isolated-joint-bn", "simclr", "pgd", (*ISO, "--no-per-view-forward")),
    Ablation("simclr-pgd-isolated-batch-100", "simclr", "pgd", (*ISO, "--batch-size", "100")),
    Ablation("simclr-pgd-original", "simclr", "pgd", ORIG),
    Ablation("simclr-pgd-original-discard-grads", "simclr", "pgd", (*ORIG, "--attack-grads", "discard")),
    Ablation("simclr-pgd-original-restore-stats", "simclr", "pgd", (*ORIG, "--attack-stats", "restore")),
    Ablation("simclr-pgd-original-training-target", "simclr", "pgd", (*ORIG, "--attack-target", "training")),
    Ablation("free", "empssl", "free", (), aa=True),
    Ablation("free-clean-views-1", "empssl", "free", ("--clean-views", "1"), aa=True),
    Ablation("free-clean-views-8", "empssl", "free", ("--clean-views", "8"), aa=True),
    Ablation("free-clean-branch", "empssl", "free", ("--clean-weight", "1"), aa=True),
    Ablation("free-per-view-bn", "empssl", "free", ("--per-view-forward",), aa=True),
    Ablation("free-clean-views-4-per-view-bn", "empssl", "free", ("--clean-views", "4", "--per-view-forward"), aa=True),
    Ablation("free-clean-views-2-per-view-bn", "empssl", "free", ("--clean-views", "2", "--per-view-forward"), aa=True),
    Ablation("free-clean-views-8-per-view-bn", "empssl", "free", ("--clean-views", "8", "--per-view-forward"), aa=True),
    Ablation("free-clean-views-4-per-view-bn-batch-50", "empssl", "free",
             ("--clean-views", "4", "--per-view-forward", "--batch-size", "50"), aa=True),
    Ablation("free-clean-views-4-per-view-bn-batch-25", "empssl", "free",
             ("--clean-views", "4", "--per-view-forward", "--batch-size", "25"), aa=True),
    Ablation("free-clean-views-4-per-view-bn-batch-50-m-4", "empssl", "free",
             ("--clean-views", "4", "--per-view-forward", "--batch-size", "50", "--replays", "4"), aa=True),
    Ablation("free-clean-views-4-per-view-bn-batch-50-m-4-seed-1", "empssl", "free",
             ("--clean-views", "4", "--per-view-forward", "--batch-size", "50", "--replays", "4", "--seed", "1"),
             aa=True),
    Ablation("free-clean-views-4-per-view-bn-batch-50-m-4-eps-12", "empssl", "free",
             ("--clean-views", "4", "--per-view-forward", "--batch-size", "50", "--replays", "4", "--eps", "12/255"),
             aa=True),
    *(Ablation(f"free-clean-views-4-per-view-bn-batch-50-m-4-eps-12-seed-{seed}", "empssl", "free",
               ("--clean-views", "4", "--per-view-forward", "--batch-size", "50", "--replays", "4", "--eps", "12/255",
                "--seed", str(seed)), aa=True) for seed in (1, 2)),
    # More optimizer steps at the anchored batch-50 row's cost: half the views for two epochs, or half the batch.
    *(Ablation(f"free-8-views-2-epochs-clean-views-2-per-view-bn-batch-50-m-4{suffix}", "empssl", "free",
               ("--num-views", "8", "--clean-views", "2", "--per-view-forward", "--batch-size", "50", "--replays", "4",
                *seed), aa=True, epochs=2)
      for suffix, seed in SEEDS),
    *(Ablation(f"free-clean-views-4-per-view-bn-batch-25-m-4{suffix}", "empssl", "free",
               ("--clean-views", "4", "--per-view-forward", "--batch-size", "25", "--replays", "4", *seed), aa=True)
      for suffix, seed in SEEDS),
    # CF-AMC-SSL for two epochs, twice its view passes: at `medium` about SimCLR free's, where more optimizer steps
    # within one epoch (the anchored batch-50 row) did not help.
    *(Ablation(f"free-2-epochs{suffix}", "empssl", "free", seed, aa=True, epochs=2) for suffix, seed in SEEDS),
    Ablation("free-clean-views-4-apart", "empssl", "free", ("--clean-views", "4", "--clean-apart"), aa=True),
    Ablation("free-clean-views-4-per-view-bn-alpha-8", "empssl", "free",
             ("--clean-views", "4", "--per-view-forward", "--alpha", "8/255"), aa=True),
    Ablation("free-clean-views-4-per-view-bn-clean-anchor", "empssl", "free",
             ("--clean-views", "4", "--per-view-forward", "--anchor", "clean"), aa=True),
    Ablation("free-8-views-clean-branch", "empssl", "free", ("--num-views", "8", "--clean-weight", "1"), aa=True),
    Ablation("free-8-views-2-epochs-clean-views-2-per-view-bn", "empssl", "free",
             ("--num-views", "8", "--clean-views", "2", "--per-view-forward"), aa=True, epochs=2),
    Ablation("free-4-views-4-epochs-clean-views-1-per-view-bn", "empssl", "free",
             ("--num-views", "4", "--clean-views", "1", "--per-view-forward"), aa=True, epochs=4),
    Ablation("free-batch-50", "empssl", "free", ("--batch-size", "50"), aa=True),
    Ablation("free-batch-50-m-4", "empssl", "free", ("--batch-size", "50", "--replays", "4"), aa=True),
    Ablation("free-batch-50-m-4-seed-1", "empssl", "free", ("--batch-size", "50", "--replays", "4", "--seed", "1"),
             aa=True),
    Ablation("free-batch-50-m-4-seed-2", "empssl", "free", ("--batch-size", "50", "--replays", "4", "--seed", "2"),
             aa=True),
    Ablation("free-8-views-clean-branch-batch-50", "empssl", "free",
             ("--num-views", "8", "--clean-weight", "1", "--batch-size", "50"), aa=True),
)
