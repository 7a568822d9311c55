"""The seed's table in one command: train, evaluate and report every row, at one of three scales.

    python -m utils.reproduce --scale small --data imagefolder --data-dir DATA --out repro/
    python -m utils.reproduce --scale full --data-dir data --out repro-full --rows crop-empssl-free --dry-run

Rows: every row of the seed's table that a registered method declares (``Method.paper``), plus each method's
standard training as the no-defence baseline. Each row trains through its own ``main_*.py`` script (with
``--resume auto``, so an interrupted row continues), is evaluated by ``evaluate_<method>.py`` (SLF, PGD-20 at
4/255 and 8/255, AutoAttack at the small and full scales), and the command ends by writing
``OUT/results.md`` (our numbers beside the paper's) and ``OUT/results.png``. ``OUT/reproduce.json`` keeps the
plan and each row's training and evaluation arguments; a later invocation with other arguments for a row is
refused. A row whose result evaluated the bytes of its ``train/last.pt`` is skipped; one whose result evaluated
another checkpoint is reported, as is a failed row, and the others still run.
"""
import hashlib
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from .cli import Parser, default_data_dir, run_main
from .data import DATASETS
from .errors import UsageError
from .methods import METHODS
from .regimes import REGIMES
from .run import machine, read_jsonl, resolve_device, write_json
from .train import parse_config, script_of

ROOT = Path(__file__).resolve().parents[1]
RESULT = "eval-slf-pre-v1-last.json"


@dataclass(frozen=True)
class Scale:
    epoch_factor: float  # every row's epochs times this, rounded, at least 1
    train: tuple = ()
    evaluate: tuple = ()
    note: str = ""
    epochs: int = 0  # instead of the factor, when set


SCALES = {
    "full": Scale(1.0, (), ("--autoattack",), "the scripts' defaults: the paper's settings"),
    # Epochs scaled by one factor keep the rows' relative costs; a narrower ResNet, a smaller projector and a
    # class-stratified 2,000-image training set bring the whole table to about two hours on a 2-core CPU.
    "small": Scale(0.1, ("--width", "8", "--hidden-dim", "512", "--subset", "2000", "--knn-test", "1000"),
                   ("--subset-train", "10000", "--no-train-augment", "--subset-test", "1000", "--autoattack",
                    "--autoattack-samples", "200"),
                   "epochs x 0.1, width 8, hidden 512, 2,000 training images; SLF on 10,000 images without "
                   "augmentation, tested on 1,000; AutoAttack on 200"),
    "smoke": Scale(0.0, ("--width", "4", "--hidden-dim", "16", "--subset", "64", "--batch-size", "16",
                         "--num-views", "5", "--pgd-steps", "1", "--replays", "2", "--knn-test", "20"),
                   ("--subset-train", "64", "--no-train-augment", "--subset-test", "20", "--finetune-epochs", "1",
                    "--pgd-steps", "1"),
                   "two epochs of a toy model, for tests", epochs=2),
}


@dataclass
class Row:
    method: str
    regime: str
    preset: str
    paper: tuple = ()  # clean, PGD 4/255, PGD 8/255, minutes
    variant: str = ""  # a regime's variant (``Regime.variants``) or the project's own row (``Method.own_rows``)
    flags: tuple = ()  # training flags of the variant
    optional: bool = False  # run only when --rows names it

    @property
    def key(self) -> str:
        return f"{self.preset}-{self.method}-{self.regime}" + (f"-{self.variant}" if self.variant else "")

    @property
    def script(self) -> str:
        return script_of(self.method, self.regime)[0]


def all_rows() -> list:
    """The seed's rows of every registered method, each method's crop-based standard baseline, the project's own
    rows (``Method.own_rows``), then the optional variants of the seed's rows (``Regime.variants``)."""
    rows = [Row(name, regime, preset, tuple(numbers)) for name, method in METHODS.items()
            for preset, regime, *numbers in method.paper]
    rows += [Row(name, regime, "crop") for name, method in METHODS.items() for regime in method.scripts
             if REGIMES[regime].baseline]
    rows += [Row(name, regime, preset, (), variant, tuple(flags)) for name, method in METHODS.items()
             for preset, regime, variant, flags, _ in method.own_rows]
    rows += [Row(row.method, row.regime, row.preset, (), variant, tuple(flags), optional=True)
             for row in rows[:] if not row.variant for variant, flags in REGIMES[row.regime].variants.items()]
    return rows


def train_argv(row, scale, args) -> list:
    defaults = script_of(row.method, row.regime)[1]
    argv = ["--data", args.data, "--data-dir", args.data_dir, "--preset", row.preset, "--seed", str(args.seed),
            "--device", args.device, "--out-dir", str(row_dir(args, row) / "train"), "--resume", "auto"]
    if scale.epochs or scale.epoch_factor != 1:
        epochs = scale.epochs or max(1, round(defaults.get("epochs", 1) * scale.epoch_factor))
        argv += ["--epochs", str(epochs)]
    accepted = parse_config(row.method, row.regime, None, [])[2]._option_string_actions
    for flag, value in zip(scale.train[::2], scale.train[1::2]):  # a flag the row's script lacks is not its concern
        if flag in accepted:
            argv += [flag, value]
    return argv + list(row.flags)


def eval_argv(row, scale, args) -> list:
    return ["--checkpoint", str(row_dir(args, row) / "train" / "last.pt"), "--out", str(row_dir(args, row)),
            "--protocol", "slf", "--eps", "4/255", "8/255", "--device", args.device, "--seed", str(args.seed),
            *scale.evaluate]


def row_dir(args, row) -> Path:
    return Path(args.out) / row.key


def cost(row, scale, args) -> float:
    """Forward+backward passes of one 32x32 view that the row's training takes, a unit for estimates."""
    cfg = parse_config(row.method, row.regime, None, train_argv(row, scale, args))[0]
    images = cfg["subset"] or 50_000
    regime = REGIMES[row.regime]
    return cfg["epochs"] * images * cfg["num_views"] * regime.passes_per_batch(cfg)


def run_command(argv, log) -> bool:
    """Runs ``python argv`` from the project's root; Ctrl-C reaches the child too (same process group), and
    the child is waited for, so a training run saves its checkpoint before the command exits."""
    with open(log, "a") as fh:
        proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
        try:
            return proc.wait() == 0
        except KeyboardInterrupt:
            proc.wait()
            raise


def entry(script, call) -> list:
    """The entry script when the project has one, else the same call through ``python -c``."""
    return [f"{script}.py"] if (ROOT / f"{script}.py").is_file() else ["-c", f"import sys; {call}; sys.exit(0)"]


def run_row(row, scale, args) -> str:
    """'done' (already there), 'ok', or the step that failed; logs go to OUT/<row>/log.txt."""
    folder = row_dir(args, row)
    if (folder / RESULT).is_file():
        return finished_status(folder)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "log.txt"
    trainer = entry(row.script, f"from utils.train import main; main({row.method!r}, {row.regime!r})")
    if not run_command([*trainer, *train_argv(row, scale, args)], log):
        return f"training failed (see {log})"
    evaluator = entry(f"evaluate_{row.method}", f"from utils.evaluate import main; main({row.method!r})")
    if not run_command([*evaluator, *eval_argv(row, scale, args)], log):
        return f"evaluation failed (see {log})"
    return "ok"


def finished_status(folder) -> str:
    """'done' when the row's result evaluated the bytes its train/last.pt holds now, else why not."""
    last = folder / "train" / "last.pt"
    evaluated = (json.loads((folder / RESULT).read_text()).get("checkpoint_identity") or {}).get("sha1")
    if not evaluated or not last.is_file() or not file_sha1(last).startswith(evaluated):
        return f"{folder / RESULT} evaluated another checkpoint than {last}; move the result aside to evaluate it again"
    return "done"


def file_sha1(path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_plan(args, rows, scale):
    """One output folder holds one plan: its scale, seed and dataset, and each row's training and evaluation
    arguments (OUT/reproduce.json). A finished row of another plan would otherwise be taken as done."""
    plan = {"scale": args.scale, "seed": args.seed, "data": args.data, "data_dir": args.data_dir}
    path = Path(args.out) / "reproduce.json"
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    recorded = earlier.pop("rows", {})
    if earlier and earlier != plan:
        raise UsageError(f"{args.out} holds rows of another plan ({', '.join(f'{k} {v}' for k, v in earlier.items())}); "
                         f"choose another --out")
    for row in rows:
        now = {"train": train_argv(row, scale, args), "evaluate": eval_argv(row, scale, args)}
        before = recorded.setdefault(row.key, now)
        changed = [part for part in now if before.get(part) != now[part]]
        if changed:
            raise UsageError(f"{row_dir(args, row)} was run with other {changed[0]} arguments "
                             f"({' '.join(before.get(changed[0]) or [])}); choose another --out")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    write_json(path, {**plan, "rows": recorded})


def reproduce(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.out, args.data_dir = str(Path(args.out).resolve()), str(Path(args.data_dir).resolve())  # children run from ROOT
    scale = SCALES[args.scale]
    rows = select_rows(args.rows)
    costs = [cost(row, scale, args) for row in rows]
    if args.dry_run:
        return print_plan(rows, costs, scale, args)
    check_plan(args, rows, scale)
    started, failures, spent = time.monotonic(), {}, 0.0
    for k, (row, units) in enumerate(zip(rows, costs)):
        elapsed = time.monotonic() - started
        remaining = f"{elapsed / spent * sum(costs[k:]) / 60:.0f} min" if spent and elapsed > 1 else "unknown"
        print(f"row {k + 1}/{len(rows)} {row.key}: elapsed {elapsed / 60:.1f} min, estimated remaining {remaining}",
              flush=True)
        status = run_row(row, scale, args)
        spent += units if status == "ok" else 0  # rows found done took no time: they would skew the estimate
        if status not in ("ok", "done"):
            failures[row.key] = status
            print(f"  {row.key}: {status}", file=sys.stderr)
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
    for row, units in zip(rows, costs):
        print(f"# {row.key}: {units / 1e6:.2f} M view passes")
        print(f"python {row.script}.py {' '.join(train_argv(row, scale, args))}")
        print(f"python evaluate_{row.method}.py {' '.join(eval_argv(row, scale, args))}")
    print(f"total training: {sum(costs) / 1e6:.2f} M forward+backward passes of a 32x32 view")
    if args.passes_per_second:
        print(f"estimated training time at {args.passes_per_second:g} passes/s: "
              f"{sum(costs) / args.passes_per_second / 60:.0f} min")
    return {}


MEASURED = ("Clean", "PGD-20 4/255", "PGD-20 8/255", "AA 4/255", "AA 8/255", "kNN (end)", "Time (min)")
PAPER = ("paper Clean", "paper PGD 4/255", "paper PGD 8/255", "paper min")


def write_results(rows, scale, args, failures):
    results = {row.key: _read_json(row_dir(args, row) / RESULT) for row in rows}
    done = {key: r for key, r in results.items() if r}
    lines = results_header(scale, args, list(done.values()))
    lines += [table_line(row, results[row.key], args, failures) for row in rows]
    (Path(args.out) / "results.md").write_text("\n".join(lines) + "\n")
    if done:
        plot_table(done, Path(args.out) / "results.png")
    print(f"wrote {Path(args.out) / 'results.md'}")


def results_header(scale, args, done) -> list:
    n_test = {r["n_test"] for r in done} or {"?"}
    n_aa = {r.get("autoattack_samples") for r in done} - {None} or {"-"}
    return [f"# The seed's table, measured at scale `{args.scale}`", "",
            f"Scale: {scale.note}. Data: {args.data} at `{Path(args.data_dir).name}`, seed {args.seed}. "
            f"Machine: {machine(resolve_device(args.device))}.", "",
            f"Protocol: SLF on the `pre` features, then on {'/'.join(map(str, n_test))} class-stratified test "
            f"images: clean accuracy; PGD-20 (step eps/4, random start); AutoAttack (standard) on a stratified "
            f"{'/'.join(map(str, n_aa))} of them. kNN: the training monitor's last value. Time: training only.", "",
            "| Model | " + " | ".join(MEASURED + PAPER) + " |", "|" + "---|" * (1 + len(MEASURED) + len(PAPER))]


def table_line(row, r, args, failures) -> str:
    if r is None:
        return f"| {row.key}: {failures.get(row.key, 'not run')} |" + " |" * (len(MEASURED) + len(PAPER))
    from .report import model_name

    aa = r.get("autoattack", {})
    minutes = r["train_seconds"] / 60 if r.get("train_seconds") else None
    ours = [r["clean"], r["pgd"].get("4/255"), r["pgd"].get("8/255"), aa.get("4/255"), aa.get("8/255"),
            last_knn(row_dir(args, row) / "train" / "metrics.jsonl"), minutes]
    paper = row.paper or (None,) * len(PAPER)
    return "| " + " | ".join([model_name(r), *(_num(v, 1) for v in ours), *(_num(v, 2) for v in paper)]) + " |"


def last_knn(metrics_path):
    """The kNN monitor's last accuracy in a run's metrics.jsonl, or None where it never ran."""
    rows = read_jsonl(metrics_path) if metrics_path.is_file() else []
    return next((m["knn"] for m in reversed(rows) if "knn" in m), None)


def plot_table(results, path) -> None:
    """Left: accuracy against eps per row. Right: robustness at 4/255 against training minutes (the cost claim).

    ``results``: {row key: evaluation result}; one colour per row in both panels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, cost) = plt.subplots(1, 2, figsize=(13, 5))
    colours = {}
    for key, r in results.items():
        eps = sorted((float(Fraction(k)) * 255, v) for k, v in r["pgd"].items())
        line, = curves.plot([0.0] + [e for e, _ in eps], [r["clean"]] + [v for _, v in eps], marker="o", label=key)
        colours[key] = line.get_color()
    curves.set(xlabel="L-inf eps (x/255)", ylabel="accuracy: clean, then under PGD-20 (%)")
    curves.legend(fontsize=8)
    draw_cost(cost, results, colours)
    for ax in (curves, cost):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_cost(ax, results, colours) -> None:
    points = {key: ((r.get("train_seconds") or 0) / 60, r["pgd"].get("4/255", math.nan)) for key, r in results.items()}
    longest = max(x for x, _ in points.values()) or 1
    strongest = max((y for _, y in points.values() if not math.isnan(y)), default=0) or 1
    placed = []
    for key, (x, y) in points.items():
        # rows of equal cost and robustness land on one spot: stack their labels downwards
        crowd = sum(abs(x - px) < 0.08 * longest and abs(y - py) < 0.05 * strongest for px, py in placed)
        placed.append((x, y))
        ax.scatter(x, y, color=colours[key])
        ax.annotate(key, (x, y), fontsize=8, xytext=(4, 2 - 10 * crowd), textcoords="offset points")
    ax.set(xlabel="training time (min)", ylabel="accuracy under PGD-20 at 4/255 (%)", xlim=(0, 1.3 * longest),
           ylim=(-0.05 * strongest, 1.15 * strongest))


def _read_json(path):
    return json.loads(path.read_text()) if path.is_file() else None


def _num(value, digits) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def build_parser() -> Parser:
    p = Parser(prog="python -m utils.reproduce", description="Train, evaluate and report every row of the seed's table.")
    p.add_argument("--scale", choices=list(SCALES), default="small")
    p.add_argument("--data", choices=DATASETS, default="cifar10")
    p.add_argument("--data-dir", default=default_data_dir() or "data", help="(default: $CFAMC_DATA_DIR or ./data)")
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
