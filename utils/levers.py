"""The lever study: each row of ``experiments.levers`` is CF-AMC-SSL with one lever (or a combination), trained as
``utils.reproduce`` trains CF-AMC-SSL at the scale, plus the lever's flags, and screened: SLF, PGD-20 at 4/255 and
8/255, and AutoAttack's first two attacks (``--screen``) on the scale's AutoAttack sample, of the encoder's weights
and, for a run that keeps one, of their moving average.

    python -m utils.levers --scale medium --data imagefolder --data-dir DATA --out levers/ [--only NAME ...]
    python -m utils.levers --scale medium --out levers/ --table        # the table of what has finished

Per lever, in OUT/crop-empssl-free-NAME/: ``train/``, ``screen/`` and, with a weight average, ``screen-ema/``.
Training resumes (``--resume auto``) and finished evaluations are skipped; OUT/levers.md is the table.
"""
import sys
from functools import partial
from pathlib import Path

from experiments.levers import LEVERS
from experiments.runner import Job, check_plan, read_result, run_job, run_plan
from experiments.scales import SCALES
from experiments.tables import markdown_table, num
from utils.core.cli import Parser, run_main, to_argv
from utils.core.errors import UsageError
from utils.evaluation.results import result_name, training_seconds
from utils.reproduce import Row, add_data_flags, row_dir, train_argv


def row_of(lever) -> Row:
    return Row("empssl", "free", "crop", variant=lever.name, flags=lever.flags)


def job_of(lever, args) -> Job:
    scale = SCALES[args.scale]
    flags = to_argv({"protocol": "slf", "eps": ("4/255", "8/255"), "device": args.device, "seed": args.seed,
                     **scale.evaluate_with("screen")})
    evaluations = {"screen": flags, **({"screen-ema": [*flags, "--weights", "ema"]} if lever.ema else {})}
    results = {name: result_name(weights="ema" if name == "screen-ema" else "model", screen=scale.autoattack)
               for name in evaluations}
    return Job(row_dir(args, row_of(lever)), "empssl", "free", train_argv(row_of(lever), scale, args), evaluations,
               results=results)


COLUMNS = ("weights", "clean", "PGD-20 4/255", "PGD-20 8/255", "APGD-CE+T 4/255", "APGD-CE+T 8/255", "train min")


def table(args) -> str:
    rows = []
    for lever in LEVERS:
        job = job_of(lever, args)
        for name in job.evaluations:
            r = read_result(job.folder / name, job.result(name))
            if r is None:
                continue
            minutes = training_seconds(r) / 60 if training_seconds(r) else None
            cells = [r["clean"], r["pgd"].get("4/255"), r["pgd"].get("8/255"), r["screen"].get("4/255"),
                     r["screen"].get("8/255"), minutes]
            rows.append([lever.name, f"`{' '.join(lever.flags)}`", r["weights"], *(num(v, 1) for v in cells)])
    return "\n".join(markdown_table(["lever", "flags", *COLUMNS], rows)) + "\n"


def select(names):
    known = {lever.name: lever for lever in LEVERS}
    unknown = [n for n in names or () if n not in known]
    if unknown:
        raise UsageError(f"unknown lever {unknown[0]}; known: {', '.join(known)}")
    return [known[n] for n in names] if names else list(LEVERS)


def levers(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.out, args.data_dir = str(Path(args.out).resolve()), str(Path(args.data_dir).resolve())
    failures = {}
    if not args.table:
        jobs = {lever.name: job_of(lever, args) for lever in select(args.only)}
        plan = {"scale": args.scale, "seed": args.seed, "data": args.data, "data_dir": args.data_dir,
                "image_size": args.image_size, "view_size": args.view_size}
        check_plan(Path(args.out) / "levers.json", plan, jobs)
        failures = run_plan({name: partial(run_job, job) for name, job in jobs.items()})
    text = table(args)  # every finished lever: invocations with other --only lists share the file
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "levers.md").write_text(text)
    print(text)
    return failures


def build_parser() -> Parser:
    p = Parser(prog="python -m utils.levers", description="Train and screen CF-AMC-SSL with each lever of the study.")
    add_data_flags(p)
    p.add_argument("--out", required=True, help="one folder per lever, levers.json and levers.md")
    p.add_argument("--scale", choices=list(SCALES), default="medium", help="the sizes of experiments.scales")
    p.add_argument("--only", nargs="+", default=None, help="lever names (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--table", action="store_true", help="only write the table of what has finished")
    return p


if __name__ == "__main__":
    sys.exit(1 if run_main(levers) else 0)
