"""The paper's table in one command: train, evaluate and report every row, at one of the scales of
``experiments.scales``.

    python -m utils.reproduce --scale small --data imagefolder --data-dir DATA --out repro/
    python -m utils.reproduce --scale full --data-dir data --out repro-full --rows crop-empssl-free --dry-run

Rows: every row of the paper's table (``experiments.paper``), each method's standard training as the no-defence
baseline and the project's own rows. Each trains through its own ``main_*.py`` script (``--resume auto``, so an
interrupted row continues), is evaluated by ``evaluate_<method>.py`` (SLF, PGD at 4/255 and 8/255, AutoAttack at
the small and larger scales), and the command ends by writing ``OUT/results.md`` (our numbers beside the paper's)
and ``OUT/results.png`` with every row of the folder that has a result. ``OUT/reproduce.json`` keeps the plan and
each row's arguments; a later invocation with other arguments for a row is refused.
"""
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from experiments.labels import model_name
from experiments.paper import BASELINES, OWN_ROWS, PAPER, VARIANTS
from experiments.runner import Job, check_plan, evaluation_status, read_result, run_job, run_plan
from experiments.scales import SCALES, scaled_train_flags
from experiments.tables import markdown_table, num, plot_results
from utils.core.cli import Parser, default_data_dir, positive_int, run_main, to_argv
from utils.core.data import DATASETS, check_dataset
from utils.core.errors import UsageError
from utils.core.files import machine, read_jsonl, resolve_device
from utils.engine.config import parse_config, script_of
from utils.evaluation.results import training_seconds
from utils.methods import METHODS
from utils.studies.ablation import regime_class


@dataclass
class Row:
    method: str
    regime: str
    preset: str
    paper: tuple = ()  # clean, PGD 4/255, PGD 8/255, minutes
    variant: str = ""  # a regime's variant (``paper.VARIANTS``) or the project's own row (``paper.OWN_ROWS``)
    flags: tuple = ()  # training flags of the variant
    optional: bool = False  # run only when --rows names it
    teacher: tuple = ()  # flags of the standard run trained first as the row's teacher (``paper.OwnRow.teacher``)

    @property
    def key(self) -> str:
        return f"{self.preset}-{self.method}-{self.regime}" + (f"-{self.variant}" if self.variant else "")

    @property
    def script(self) -> str:
        return script_of(self.method, self.regime)[0]


def all_rows() -> list:
    """The paper's rows, each method's crop-based baselines, the project's own rows, then the optional variants."""
    rows = [Row(p.method, p.regime, p.preset, (p.clean, p.pgd4, p.pgd8, p.minutes)) for p in PAPER
            if p.method in METHODS]
    rows += [Row(name, regime, "crop") for name in METHODS for regime in BASELINES]
    rows += [Row(o.method, o.regime, o.preset, (), o.variant, o.flags, teacher=o.teacher) for o in OWN_ROWS]
    rows += [Row(row.method, row.regime, row.preset, (), variant, tuple(flags), optional=True)
             for row in rows[:] if not row.variant for variant, flags in VARIANTS.get(row.regime, {}).items()]
    return rows


def data_argv(args) -> list:
    """The data flags of every training stage: the data set, and the image and view sizes where given."""
    sizes = [arg for flag, value in (("--image-size", args.image_size), ("--view-size", args.view_size))
             if value for arg in (flag, str(value))]
    return ["--data", args.data, "--data-dir", args.data_dir, *sizes]


def train_argv(row, scale, args) -> list:
    argv = [*data_argv(args), "--preset", row.preset, "--seed", str(args.seed),
            "--device", args.device, "--out-dir", str(row_dir(args, row) / "train"), "--resume", "auto"]
    teacher = ["--teacher", str(row_dir(args, row) / "teacher" / "last.pt")] if row.teacher else []
    return argv + scaled_train_flags(row.method, row.regime, scale) + list(row.flags) + teacher


def teacher_stages(row, scale, args) -> list:
    """[(method, "standard", flags)]: the row's teacher, trained at the row's epochs into its folder's teacher/."""
    if not row.teacher:
        return []
    epochs = parse_config(row.method, row.regime, None, scaled_train_flags(row.method, row.regime, scale))[0]["epochs"]
    argv = [*data_argv(args), "--preset", row.preset, "--seed", str(args.seed),
            "--device", args.device, "--out-dir", str(row_dir(args, row) / "teacher"), "--resume", "auto"]
    flags = argv + scaled_train_flags(row.method, "standard", scale, epochs) + list(row.teacher)
    return [(row.method, "standard", flags)]


def eval_flags(scale, args) -> list:
    return to_argv({"protocol": "slf", "eps": ("4/255", "8/255"), "device": args.device, "seed": args.seed,
                    **fit_samples(scale.evaluate, getattr(args, "sizes", None))})


def fit_samples(settings, sizes) -> dict:
    """The scale's evaluation settings with subset_train / subset_test cut to the labelled images the data set
    has (``sizes``: {"train": n, "test": n}; STL-10 labels 5,000 training images where CIFAR has 50,000)."""
    cut = {key: min(settings[key], sizes[split]) for key, split in (("subset_train", "train"), ("subset_test", "test"))
           if sizes and key in settings}
    return {**settings, **cut}


def row_dir(args, row) -> Path:
    return Path(args.out) / row.key


def job_of(row, scale, args) -> Job:
    return Job(row_dir(args, row), row.method, row.regime, train_argv(row, scale, args), {"": eval_flags(scale, args)},
               teacher_stages(row, scale, args))


def run_row(row, scale, args) -> str:
    """'done' (its result evaluated its train/last.pt as it is), 'ok', or what failed or stands in the way."""
    folder = row_dir(args, row)
    status = evaluation_status(folder / "train" / "last.pt", folder)
    return status if status != "todo" else run_job(job_of(row, scale, args))


def cost(row, scale, args) -> float:
    """Forward+backward passes of one view that the row's training takes, a unit for estimates."""
    passes = 0.0
    stages = [*teacher_stages(row, scale, args), (row.method, row.regime, train_argv(row, scale, args))]
    for method, regime, argv in stages:
        cfg = parse_config(method, regime, None, argv)[0]
        passes += cfg["epochs"] * (cfg["subset"] or 50_000) * cfg["num_views"] * regime_class(cfg).passes_per_batch(cfg)
    return passes


def reproduce(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.out, args.data_dir = (str(Path(args.out).resolve()),
                               str(Path(args.data_dir).resolve()))  # children run from ROOT
    scale = SCALES[args.scale]
    rows = select_rows(args.rows)
    costs = {row.key: cost(row, scale, args) for row in rows}
    if args.dry_run:
        return print_plan(rows, costs, scale, args)
    args.sizes = check_dataset(args.data, args.data_dir, args.image_size)
    jobs = {row.key: job_of(row, scale, args) for row in rows}
    plan = {"scale": args.scale, "seed": args.seed, "data": args.data, "data_dir": args.data_dir,
            "image_size": args.image_size, "view_size": args.view_size}
    check_plan(Path(args.out) / "reproduce.json", plan, jobs)
    failures = run_plan({row.key: lambda row=row: run_row(row, scale, args) for row in rows}, costs)
    write_results(rows, scale, args, failures)
    return failures


def select_rows(keys):
    rows = all_rows()
    if not keys:
        return [row for row in rows if not row.optional]
    known = {row.key: row for row in rows}
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise UsageError(f"unknown row {unknown[0]}; rows: {', '.join(known)}")
    return [known[k] for k in keys]


def print_plan(rows, costs, scale, args):
    print(f"scale {args.scale}: {scale.note}")
    for row in rows:
        print(f"# {row.key}: {costs[row.key] / 1e6:.2f} M view passes")
        for method, regime, flags in teacher_stages(row, scale, args):
            print(f"python {script_of(method, regime)[0]}.py {' '.join(flags)}")
        print(f"python {row.script}.py {' '.join(train_argv(row, scale, args))}")
        print(f"python evaluate_{row.method}.py {' '.join(job_of(row, scale, args).eval_argv(''))}")
    total = sum(costs.values())
    print(f"total training: {total / 1e6:.2f} M forward+backward passes of a view")
    if args.passes_per_second:
        print(f"estimated training time at {args.passes_per_second:g} passes/s: "
              f"{total / args.passes_per_second / 60:.0f} min")
    return {}


MEASURED = ("Clean", "PGD 4/255", "PGD 8/255", "AA 4/255", "AA 8/255", "kNN (end)", "Time (min)")
PAPER_COLUMNS = ("paper Clean", "paper PGD 4/255", "paper PGD 8/255", "paper min")


def write_results(rows, scale, args, failures):
    """OUT/results.md and results.png: every row of ``rows`` with a result in OUT (or a failure this call), the
    rows of earlier calls included, so that a call for some rows never shrinks the table."""
    asked = {row.key for row in rows}
    results = {row.key: read_result(row_dir(args, row)) for row in all_rows()}
    shown = [row for row in all_rows() if row.key in asked or results[row.key]]
    done = {row.key: results[row.key] for row in shown if results[row.key]}
    body = [table_cells(row, results[row.key], args, failures) for row in shown]
    lines = results_header(scale, args, list(done.values()))
    lines += markdown_table(["Model", *MEASURED, *PAPER_COLUMNS], body)
    (Path(args.out) / "results.md").write_text("\n".join(lines) + "\n")
    if done:
        plot_results(done, Path(args.out) / "results.png")
    print(f"wrote {Path(args.out) / 'results.md'}")


def results_header(scale, args, done) -> list:
    n_test = sorted({r["n_test"] for r in done}) or ["?"]
    n_aa = sorted({r.get("autoattack_samples") or r["n_test"] for r in done if r.get("autoattack")}) or ["-"]
    steps = sorted({str((r.get("settings") or {}).get("pgd_steps", "?")) for r in done}) or ["?"]
    return [f"# The paper's table, measured at scale `{args.scale}`", "",
            f"Scale: {scale.note}. Data: {data_words(args, done)}; seed {args.seed}.{carried_over(args)} "
            f"Machine: {machine(resolve_device(args.device))}.", "",
            f"Protocol: SLF on the `pre` features, then on {'/'.join(map(str, n_test))} class-stratified test "
            f"images: clean accuracy; PGD-{'/'.join(steps)} (step eps/4, random start); AutoAttack (standard) on a "
            f"stratified sample of {'/'.join(map(str, n_aa))} of them. kNN: the training monitor's last value. "
            f"Time: training only.", ""]


def carried_over(args) -> str:
    if args.data == "cifar10" and not (args.image_size or args.view_size):
        return ""
    images = f"{args.image_size}x{args.image_size} images" if args.image_size else "images of their own size"
    sizes = f" at {images}" + (f", cut into {args.view_size}x{args.view_size} views" if args.view_size else "")
    return (f" Every row keeps the paper's CIFAR-10 settings (epochs, batch, views, radii, learning rates), carried "
            f"over unchanged to {args.data}{sizes}.")


def data_words(args, done) -> str:
    """The data set the rows were evaluated on, as their results record it: its sizes, classes and fingerprint."""
    sources = {json.dumps(r["data"], sort_keys=True): r["data"] for r in done if r.get("data")}
    if not sources:
        return f"{args.data} in a folder named `{Path(args.data_dir).name}`"
    return "; ".join(f"{d['name']} `{d['folder']}` ({d['train_images']:,} training and {d['test_images']:,} test "
                     f"images, {d['classes']} classes; test images sha1 {d['test_sha1']})" for d in sources.values())


def table_cells(row, r, args, failures) -> list:
    if r is None:
        return [f"{row.key}: {failures.get(row.key, 'not run')}"]
    aa = r.get("autoattack", {})
    minutes = training_seconds(r) / 60 if training_seconds(r) else None
    ours = [r["clean"], r["pgd"].get("4/255"), r["pgd"].get("8/255"), aa.get("4/255"), aa.get("8/255"),
            last_knn(row_dir(args, row) / "train" / "metrics.jsonl"), minutes]
    paper = row.paper or (None,) * len(PAPER_COLUMNS)
    return [model_name(r), *(num(v, 1) for v in ours), *(num(v, 2) for v in paper)]


def last_knn(metrics_path):
    """The kNN monitor's last accuracy in a run's metrics.jsonl, or None where it never ran."""
    rows = read_jsonl(metrics_path) if metrics_path.is_file() else []
    return next((m["knn"] for m in reversed(rows) if "knn" in m), None)


def add_data_flags(p) -> None:
    """The data of every row: what ``data_argv`` hands each training stage."""
    p.add_argument("--data", choices=DATASETS, default="cifar10")
    p.add_argument("--data-dir", default=default_data_dir() or "data", help="(default: $CFAMC_DATA_DIR or ./data)")
    p.add_argument("--image-size", type=positive_int, default=None,
                   help="train and evaluate on the images resized to NxN (default: as stored)")
    p.add_argument("--view-size", type=positive_int, default=None, help="the views' side (default: the image size)")


def build_parser() -> Parser:
    p = Parser(prog="python -m utils.reproduce",
               description="Train, evaluate and report every row of the paper's table.")
    p.add_argument("--scale", choices=list(SCALES), default="small")
    add_data_flags(p)
    p.add_argument("--out", required=True, help="folder for every row's run, evaluation and results.md")
    p.add_argument("--rows", nargs="+", default=None, help="row keys such as crop-empssl-free (default: all)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dry-run", action="store_true", help="print the commands and the estimated cost, run nothing")
    p.add_argument("--passes-per-second", type=float, default=None,
                   help="this machine's training throughput in view passes/s, for --dry-run's time estimate")
    return p


if __name__ == "__main__":
    sys.exit(1 if run_main(reproduce) else 0)
