"""Gather evaluation results (``eval-*.json``, and the older ``eval.json``) into a markdown table shaped like
the paper's, one row per (run, checkpoint, protocol, features, test views), and plot accuracy against eps.

    python -m utils.report runs/ [more dirs or result files] [--out table.md] [--plot robust.png]
"""
import json
import sys
from fractions import Fraction
from pathlib import Path

from experiments.labels import model_name
from experiments.runner import file_sha1
from experiments.tables import markdown_table
from utils.core.cli import Parser, eps_label, radius, run_main
from utils.core.errors import UsageError
from utils.core.files import plain
from utils.core.version import version_words
from utils.evaluation.evaluate import build_parser, fill_protocol_defaults
from utils.evaluation.protocols import PROTOCOLS
from utils.evaluation.results import training_seconds
from utils.methods import METHODS
from utils.tsne import tsne

PATTERNS = ("eval-*.json", "eval.json")
PROTOCOL_ORDER = ("slf", "alf", "aff")


def find_results(paths):
    files = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files.extend(sorted(f for pattern in PATTERNS for f in p.rglob(pattern)))
        else:
            raise UsageError(f"{p} does not exist; pass run directories or evaluation result files")
    results = []
    for f in dict.fromkeys(f.resolve() for f in files):
        try:
            r = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UsageError(f"cannot read {f}: {e}") from None
        r["_path"] = str(f)
        results.append(r)
    return results


def protocol_of(r) -> tuple:
    """(protocol, features, test views) of a result; an ``eval.json`` predates protocols: its Adam probe."""
    s = r.get("settings", {})
    legacy = "legacy adversarial probe" if s.get("probe") == "adversarial" else "legacy probe"
    return (r.get("protocol", legacy), r.get("features", s.get("features", "pre")),
            r.get("test_views", s.get("test_views", 1)))


def _order(r):
    protocol, features, views = protocol_of(r)
    rank = PROTOCOL_ORDER.index(protocol) if protocol in PROTOCOL_ORDER else len(PROTOCOL_ORDER)
    return model_name(r), rank, protocol, features, views


def eval_text(r) -> str:
    text = f"PGD-{r.get('settings', {}).get('pgd_steps', '?')}"
    return text + (f", AutoAttack on {r['autoattack_samples']}" if "autoattack_samples" in r else "")


# Settings no table column is for: where the files are (no local paths in tables) and what other columns show.
NOT_SETTINGS = ("checkpoint", "out", "data_dir", "download", "protocol", "features", "test_views", "channels_last")


def settings_text(r) -> str:
    """The evaluation's settings that differ from its protocol's defaults, as flags ('--seed 1, --no-random-start'),
    so that results that differ only there do not read alike; '-' where none does (or a result predates them)."""
    settings, method = r.get("settings"), r.get("method")
    if not settings or method not in METHODS or r.get("protocol") not in PROTOCOLS:
        return "-"
    parser = build_parser(method)
    data = settings.get("data") or (r.get("train_config") or {}).get("data", "cifar10")
    defaults = vars(fill_protocol_defaults(parser.parse_args(["--checkpoint", "-", "--protocol", r["protocol"]]), data))
    actions = {a.dest: a for a in parser._actions}
    changed = [flag_text(actions[k], v) for k, v in settings.items()
               if k in actions and k not in NOT_SETTINGS and _json(v) != _json(defaults[k])]
    return ", ".join(changed) or "-"


def flag_text(action, value) -> str:
    if action.nargs == 0:  # a switch: its flag alone says it
        return action.option_strings[0]
    values = value if isinstance(value, list) else [value]
    shown = [eps_label(v) if action.type is radius else str(v) for v in values]
    return " ".join([action.option_strings[0], *shown])


def _json(value):
    return json.loads(json.dumps(plain(value)))


def table(results) -> str:
    aa_keys = sorted({k for r in results for k in r.get("autoattack", {})}, key=lambda k: float(Fraction(k)))
    header = ["Model", "Protocol", "Features", "Views", "Clean", "PGD(4/255)", "PGD(8/255)"]
    header += [f"AutoAttack({k})" for k in aa_keys]
    header += ["Time (min)", "Trained", "Evaluation", "Settings", "n_test", "Code", "Run"]
    body = []
    for r in sorted(results, key=_order):
        seconds = training_seconds(r)
        minutes = f"{seconds / 60:.1f}" if seconds is not None else "-"
        cells = [model_name(r), *map(str, protocol_of(r)), f"{r['clean']:.2f}", _get(r["pgd"], "4/255"),
                 _get(r["pgd"], "8/255")]
        cells += [_get(r.get("autoattack", {}), k) for k in aa_keys]
        cells += [minutes, trained_text(r), eval_text(r), settings_text(r), str(r.get("n_test", "?")), code_text(r),
                  run_text(r)]
        body.append(cells)
    return "\n".join(markdown_table(header, body)) + "\n"


def trained_text(r) -> str:
    """'10/10 epochs', marked where the run was unfinished when evaluated or its checkpoint has changed since."""
    identity = r.get("checkpoint_identity") or {}
    reached, planned = identity.get("epoch"), (r.get("train_config") or {}).get("epochs")
    text = f"{reached}/{planned} epochs" if reached is not None and planned else "-"
    if reached is not None and planned and reached < planned:
        text += " **unfinished**"
    if checkpoint_changed(r):
        text += " **checkpoint changed since**"
    return text


def code_text(r) -> str:
    """The code that trained the run (every version, where a resume changed it) and, where it differs, the code
    that evaluated it; '?' for files written before the code was recorded."""
    trained = " then ".join(version_words(v) for v in r.get("train_code") or [None])
    evaluated = version_words(r.get("code"))
    return trained if [r.get("code")] == r.get("train_code") else f"{trained}; evaluated by {evaluated}"


def checkpoint_changed(r) -> bool:
    """Whether the checkpoint file the result evaluated now holds other bytes (False where it is gone)."""
    identity = r.get("checkpoint_identity") or {}
    path = Path(identity.get("file") or "")
    return bool(identity.get("sha1")) and path.is_file() and not file_sha1(path).startswith(identity["sha1"])


def run_text(r) -> str:
    """The run's folder, by its last two names (never a machine's own path)."""
    folder = Path((r.get("checkpoint_identity") or {}).get("file") or r.get("checkpoint", "")).parent
    return "/".join(folder.parts[-2:]) or "-"


def _get(d, key):
    return f"{d[key]:.2f}" if key in d else "-"


def plot(results, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in sorted(results, key=_order):
        protocol, features, views = protocol_of(r)
        points = sorted([(0.0, r["clean"])] + [(float(Fraction(k)) * 255, v) for k, v in r["pgd"].items()])
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                label=f"{model_name(r)}: {protocol}, {features}, {views} view{'s' * (views > 1)}")
    ax.set_xlabel("L-inf eps (x/255)")
    ax.set_ylabel("accuracy under PGD (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(argv=None):
    p = Parser(prog="python -m utils.report", description="Table and plot from evaluation results.")
    p.add_argument("paths", nargs="*", help="run directories (searched for eval-*.json and eval.json) or result files")
    p.add_argument("--out", default=None, help="also write the markdown table here (with --tsne: the PNG)")
    p.add_argument("--plot", default=None,
                   help="PNG of accuracy against eps (default: robust_accuracy.png in the first dir)")
    p.add_argument("--tsne", metavar="CHECKPOINT", default=None,
                   help="instead, a t-SNE of CHECKPOINT's features, clean and under PGD "
                        "(flags: python -m utils.tsne --help)")
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--tsne" in argv:  # the rest of the line is utils.tsne's, CHECKPOINT its positional argument
        i = argv.index("--tsne")
        return tsne(argv[:i] + argv[i + 1:])
    args = p.parse_args(argv)
    if not args.paths:
        p.error("give run directories or result files")
    results = find_results(args.paths)
    if not results:
        raise UsageError(f"no eval.json or eval-*.json under {', '.join(args.paths)}; "
                         "run evaluate_*.py on a checkpoint first")
    text = table(results)
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    first = Path(args.paths[0])
    plot_path = Path(args.plot) if args.plot else (first if first.is_dir() else first.parent) / "robust_accuracy.png"
    plot(results, plot_path)
    print(f"plot: {plot_path}")
    return text


if __name__ == "__main__":
    run_main(report)
