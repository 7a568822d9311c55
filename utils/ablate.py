"""The small-scale ablations behind RESULTS.md's study of adversarial multi-crop training: each entry of
``experiments.ablations`` is a training script with flags, trained at the ``small`` scale and evaluated with a
diagnostic protocol.

    python -m utils.ablate --data imagefolder --data-dir DATA --out ablations/ [--only NAME ...]
    python -m utils.ablate --out ablations/ --table        # the table of what has finished
    python -m utils.ablate --out ablations/ --dry-run      # the commands, nothing run

Per entry, in OUT/NAME/: ``train/`` (the run, with ``--attack-gain`` in the adversarial regimes), ``pgd/`` (SLF,
then PGD-20 at 1/255 and 4/255), ``noise/`` (uniform noise of 8/255: PGD with 0 steps), and for entries marked
``aa``: ``aa/`` (PGD-20 and AutoAttack at 4/255 and 8/255 on 200 images). Training resumes (``--resume auto``)
and finished evaluations are skipped, so an interrupted command continues where it stopped. Two invocations
with disjoint ``--only`` lists share a 2-core machine.
"""
import sys
from functools import partial
from pathlib import Path

from experiments.ablations import ABLATIONS
from experiments.runner import Job, read_result, run_job, run_plan
from experiments.scales import SCALES, scaled_train_flags
from experiments.tables import markdown_table
from utils.core.cli import Parser, default_data_dir, run_main, to_argv
from utils.core.data import DATASETS
from utils.core.errors import UsageError
from utils.core.files import read_jsonl
from utils.engine.config import script_of
from utils.evaluation.results import training_seconds
from utils.regimes import REGIMES, Adversarial


def train_argv(ab, args) -> list:
    gain = ["--attack-gain"] if issubclass(REGIMES.lookup(ab.regime), Adversarial) else []
    return ["--data", args.data, "--data-dir", args.data_dir, "--device", args.device,
            *scaled_train_flags(ab.method, ab.regime, SCALES[args.scale], ab.epochs),
            "--out-dir", str(Path(args.out) / ab.name / "train"), "--resume", "auto", *gain, *ab.flags]


def evaluation_flags(ab, args) -> dict:
    """Folder -> evaluation flags: the diagnostic protocol of every entry, AutoAttack for the candidates; the
    images fine-tuned on and tested are the scale's (``small``: SLF on 10,000 without augmentation, 1,000 tested,
    AutoAttack on 200)."""
    evaluate = SCALES[args.scale].evaluate
    sizes = {key: value for key, value in evaluate.items() if not key.startswith("autoattack")}
    aa_sizes = {key: value for key, value in evaluate.items() if key.startswith("autoattack_")}
    common = {"protocol": "slf", **sizes, "device": args.device, "seed": 0}
    runs = {"pgd": {"eps": ("1/255", "4/255")}, "noise": {"eps": "8/255", "pgd_steps": 0}}
    if ab.aa:
        runs["aa"] = {"eps": ("4/255", "8/255"), "autoattack": True, **aa_sizes}
    return {name: to_argv({**common, **settings}) for name, settings in runs.items()}


def job_of(ab, args) -> Job:
    return Job(Path(args.out) / ab.name, ab.method, ab.regime, train_argv(ab, args), evaluation_flags(ab, args))


def evaluations(ab, args) -> dict:
    """Folder -> the evaluation's whole command line."""
    job = job_of(ab, args)
    return {name: job.eval_argv(name) for name in job.evaluations}


COLUMNS = ("gain, epoch 1", "gain, last epoch", "kNN", "clean", "noise 8/255", "PGD-20 1/255", "PGD-20 4/255",
           "AA 4/255", "train min")


def row_values(folder) -> list:
    """One entry's figures, in ``COLUMNS`` order; None where a stage has not run."""
    metrics = read_jsonl(folder / "train" / "metrics.jsonl") if (folder / "train" / "metrics.jsonl").is_file() else []
    gains = [m["attack_gain"] for m in metrics if "attack_gain" in m]
    knn = [m["knn"] for m in metrics if "knn" in m]
    pgd, noise, aa = (read_result(folder / name) or {} for name in ("pgd", "noise", "aa"))
    minutes = training_seconds(pgd) or (metrics[-1]["train_seconds"] if metrics else None)
    return [gains[0] if gains else None, gains[-1] if len(gains) > 1 else None, knn[-1] if knn else None,
            pgd.get("clean"), noise.get("pgd", {}).get("8/255"), pgd.get("pgd", {}).get("1/255"),
            pgd.get("pgd", {}).get("4/255"), aa.get("autoattack", {}).get("4/255"),
            minutes / 60 if minutes else None]


def table(args, entries) -> str:
    rows = []
    for ab in entries:
        values = row_values(Path(args.out) / ab.name)
        if all(v is None for v in values):
            continue
        cells = ["-" if v is None else f"{v:.{3 if i < 2 else 1}f}" for i, v in enumerate(values)]
        flags = [*ab.flags, *(["--epochs", str(ab.epochs)] if ab.epochs else [])]
        rows.append([ab.name, f"`{script_of(ab.method, ab.regime)[0]}.py {' '.join(flags)}`", *cells])
    return "\n".join(markdown_table(["entry", "flags", *COLUMNS], rows)) + "\n"


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
    failures = {} if args.table else run_plan({ab.name: partial(run_job, job_of(ab, args)) for ab in entries})
    text = table(args, ABLATIONS)  # every finished entry: invocations with other --only lists share the file
    (Path(args.out) / "ablations.md").write_text(text)
    print(text)
    return failures


def build_parser() -> Parser:
    p = Parser(prog="python -m utils.ablate", description="Train and evaluate the small-scale ablations.")
    p.add_argument("--data", choices=DATASETS, default="cifar10")
    p.add_argument("--data-dir", default=default_data_dir() or "data", help="(default: $CFAMC_DATA_DIR or ./data)")
    p.add_argument("--out", required=True, help="one folder per ablation, and ablations.md")
    p.add_argument("--scale", choices=list(SCALES), default="small", help="the sizes of experiments.scales")
    p.add_argument("--only", nargs="+", default=None, help="ablation names (default: all)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    p.add_argument("--table", action="store_true", help="only write the table of what has finished")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return p


if __name__ == "__main__":
    sys.exit(1 if run_main(ablate) else 0)
