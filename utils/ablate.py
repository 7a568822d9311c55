"""The small-scale ablations behind RESULTS.md's study of adversarial multi-crop training: each entry is a training
script with flags, trained at the ``small`` scale of ``utils.reproduce`` and evaluated with a diagnostic protocol.

    python -m utils.ablate --data imagefolder --data-dir DATA --out ablations/ [--only NAME ...]
    python -m utils.ablate --out ablations/ --table        # the table of what has finished
    python -m utils.ablate --out ablations/ --dry-run      # the commands, nothing run

Per entry, in OUT/NAME/: ``train/`` (the run, with ``--attack-gain`` in the adversarial regimes), ``pgd/`` (SLF,
then PGD-20 at 1/255 and 4/255), ``noise/`` (uniform noise of 8/255: PGD with 0 steps), and for entries marked
``aa``: ``aa/`` (PGD-20 and AutoAttack at 4/255 and 8/255 on 200 images). Training resumes (``--resume auto``)
and finished evaluations are skipped, so an interrupted command continues where it stopped. Two invocations
with disjoint ``--only`` lists share a 2-core machine.
"""
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from .cli import Parser, default_data_dir, run_main
from .data import DATASETS
from .errors import UsageError
from .regimes import REGIMES, Adversarial
from .reproduce import SCALES, entry, run_command
from .run import read_jsonl
from .train import script_of


@dataclass(frozen=True)
class Ablation:
    name: str
    method: str
    regime: str
    flags: tuple = ()
    aa: bool = False  # also AutoAttack: the candidates for the project's own method
    epochs: int = 0  # instead of the scale's (the script's default x 0.1)


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
    Ablation("pgd-isolated-clean-views-4-per-view-bn", "empssl", "pgd", (*ISO, "--clean-views", "4", "--per-view-forward")),
    Ablation("pgd-isolated-alpha-1", "empssl", "pgd", (*ISO, "--alpha", "1/255")),
    Ablation("pgd-isolated-eps-2", "empssl", "pgd", (*ISO, "--eps", "2/255", "--alpha", "0.0025")),
    Ablation("pgd-isolated-eps-4", "empssl", "pgd", (*ISO, "--eps", "4/255", "--alpha", "0.005")),
    Ablation("pgd-isolated-invariance-attack", "empssl", "pgd", (*ISO, "--attack-tcr-coef", "0")),
    Ablation("pgd-isolated-2-views", "empssl", "pgd", (*ISO, "--num-views", "2")),
    Ablation("pgd-isolated-tcr-coef-0.25", "empssl", "pgd", (*ISO, "--tcr-coef", "0.25")),
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
             ("--clean-views", "4", "--per-view-forward", "--batch-size", "50", "--replays", "4", "--seed", "1"), aa=True),
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


def train_argv(ab, args) -> list:
    scale = SCALES["small"]
    epochs = ab.epochs or max(1, round(script_of(ab.method, ab.regime)[1].get("epochs", 1) * scale.epoch_factor))
    gain = ["--attack-gain"] if issubclass(REGIMES.lookup(ab.regime), Adversarial) else []
    return ["--data", args.data, "--data-dir", args.data_dir, "--device", args.device, "--epochs", str(epochs),
            *scale.train, "--out-dir", str(Path(args.out) / ab.name / "train"), "--resume", "auto", *gain, *ab.flags]


def evaluations(ab, args) -> dict:
    """Folder -> evaluation flags: the diagnostic protocol of every entry, AutoAttack for the candidates."""
    folder = Path(args.out) / ab.name
    common = ["--checkpoint", str(folder / "train" / "last.pt"), "--protocol", "slf", "--subset-train", "10000",
              "--no-train-augment", "--subset-test", "1000", "--device", args.device, "--seed", "0"]
    runs = {"pgd": ["--eps", "1/255", "4/255"], "noise": ["--eps", "8/255", "--pgd-steps", "0"]}
    if ab.aa:
        runs["aa"] = ["--eps", "4/255", "8/255", "--autoattack", "--autoattack-samples", "200"]
    return {name: [*common, "--out", str(folder / name), *flags] for name, flags in runs.items()}


def run_ablation(ab, args) -> str:
    folder = Path(args.out) / ab.name
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "log.txt"
    trainer = entry(script_of(ab.method, ab.regime)[0], f"from utils.train import main; main({ab.method!r}, {ab.regime!r})")
    if not run_command([*trainer, *train_argv(ab, args)], log):
        return f"training failed (see {log})"
    evaluator = entry(f"evaluate_{ab.method}", f"from utils.evaluate import main; main({ab.method!r})")
    for name, argv in evaluations(ab, args).items():
        if result_of(folder / name) is None and not run_command([*evaluator, *argv], log):
            return f"evaluation {name} failed (see {log})"
    return "ok"


def result_of(folder):
    """The SLF result in an evaluation folder, or None."""
    found = sorted(Path(folder).glob("eval-slf-*.json"))
    return json.loads(found[0].read_text()) if found else None


COLUMNS = ("gain, epoch 1", "gain, last epoch", "kNN", "clean", "noise 8/255", "PGD-20 1/255", "PGD-20 4/255",
           "AA 4/255", "train min")


def row_values(folder) -> list:
    """One entry's figures, in ``COLUMNS`` order; None where a stage has not run."""
    metrics = read_jsonl(folder / "train" / "metrics.jsonl") if (folder / "train" / "metrics.jsonl").is_file() else []
    gains = [m["attack_gain"] for m in metrics if "attack_gain" in m]
    knn = [m["knn"] for m in metrics if "knn" in m]
    pgd, noise, aa = (result_of(folder / name) or {} for name in ("pgd", "noise", "aa"))
    minutes = pgd.get("train_seconds") or (metrics[-1]["train_seconds"] if metrics else None)
    return [gains[0] if gains else None, gains[-1] if len(gains) > 1 else None, knn[-1] if knn else None,
            pgd.get("clean"), noise.get("pgd", {}).get("8/255"), pgd.get("pgd", {}).get("1/255"),
            pgd.get("pgd", {}).get("4/255"), aa.get("autoattack", {}).get("4/255"),
            minutes / 60 if minutes else None]


def table(args, entries) -> str:
    lines = ["| entry | flags | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 2)]
    for ab in entries:
        values = row_values(Path(args.out) / ab.name)
        if all(v is None for v in values):
            continue
        script = script_of(ab.method, ab.regime)[0]
        cells = ["-" if v is None else f"{v:.{3 if i < 2 else 1}f}" for i, v in enumerate(values)]
        flags = [*ab.flags, *(["--epochs", str(ab.epochs)] if ab.epochs else [])]
        lines.append(f"| {ab.name} | `{script}.py {' '.join(flags)}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def select(names):
    known = {ab.name: ab for ab in ABLATIONS}
    unknown = [n for n in names or () if n not in known]
    if unknown:
        raise UsageError(f"unknown ablation {unknown[0]}; known: {', '.join(known)}")
    return [known[n] for n in names] if names else list(ABLATIONS)


def ablate(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.out, args.data_dir = str(Path(args.out).resolve()), str(Path(args.data_dir).resolve())
    entries = select(args.only)
    if args.dry_run:
        for ab in entries:
            print(f"# {ab.name}\npython {script_of(ab.method, ab.regime)[0]}.py {' '.join(train_argv(ab, args))}")
            for argv_ in evaluations(ab, args).values():
                print(f"python evaluate_{ab.method}.py {' '.join(argv_)}")
        return {}
    failures = {}
    if not args.table:
        for ab in entries:
            print(f"{ab.name} ...", flush=True)
            status = run_ablation(ab, args)
            if status != "ok":
                failures[ab.name] = status
                print(f"  {ab.name}: {status}", file=sys.stderr)
    text = table(args, ABLATIONS)  # every finished entry: invocations with other --only lists share the file
    (Path(args.out) / "ablations.md").write_text(text)
    print(text)
    return failures


def build_parser() -> Parser:
    p = Parser(prog="python -m utils.ablate", description="Train and evaluate the small-scale ablations.")
    p.add_argument("--data", choices=DATASETS, default="cifar10")
    p.add_argument("--data-dir", default=default_data_dir() or "data", help="(default: $CFAMC_DATA_DIR or ./data)")
    p.add_argument("--out", required=True, help="one folder per ablation, and ablations.md")
    p.add_argument("--only", nargs="+", default=None, help="ablation names (default: all)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    p.add_argument("--table", action="store_true", help="only write the table of what has finished")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return p


if __name__ == "__main__":
    sys.exit(1 if run_main(ablate) else 0)
