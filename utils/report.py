"""Gather ``eval.json`` files into a markdown table shaped like the paper's, and plot accuracy against eps.

    python -m utils.report runs/ [more dirs or eval.json files] [--out table.md] [--plot robust.png]
"""
import json
import sys
from fractions import Fraction
from pathlib import Path

from .cli import Parser, run_main
from .errors import UsageError

REGIMES = {"standard": "standard", "pgd": "{pgd_steps}-step PGD", "free": "m={replays} free"}
NAMES = {"simclr": "SimCLR", "empssl": "EMP-SSL"}


def find_results(paths):
    files = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files.extend(sorted(p.rglob("eval.json")))
        else:
            raise UsageError(f"{p} does not exist; pass run directories or eval.json files")
    results = []
    for f in files:
        try:
            r = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UsageError(f"cannot read {f}: {e}") from None
        r["_path"] = str(f)
        results.append(r)
    return results


def model_name(r) -> str:
    cfg = r.get("train_config") or {}
    method = r.get("method", cfg.get("method", "?"))
    regime = r.get("regime", cfg.get("regime", "?"))
    preset = cfg.get("preset", "crop")
    views = cfg.get("num_views", 2)
    unit = "crops" if preset == "crop" else "patches"
    regime_text = REGIMES.get(regime, regime).format(**{"pgd_steps": "?", "replays": "?", **cfg})
    epochs = cfg.get("epochs", "?")
    details = [f"{views} {unit}", regime_text, f"{epochs} epochs"]
    if cfg.get("width", 64) != 64:
        details.append(f"width {cfg['width']}")
    if cfg.get("subset"):
        details.append(f"{cfg['subset']} train images")
    name = f"{preset.capitalize()}-based {NAMES.get(method, method)} ({', '.join(details)})"
    if method == "empssl" and regime == "free":
        name += " = CF-AMC-SSL"
    return name


def eval_text(r) -> str:
    s = r.get("settings", {})
    views = s.get("test_views", 1)
    return f"{s.get('probe', 'standard')} probe, PGD-{s.get('pgd_steps', '?')}" + (f", {views} views" if views > 1 else "")


def table(results) -> str:
    aa_keys = sorted({k for r in results for k in r.get("autoattack", {})}, key=lambda k: float(Fraction(k)))
    header = ["Model", "Clean", "PGD(4/255)", "PGD(8/255)"] + [f"AutoAttack({k})" for k in aa_keys]
    header += ["Time (min)", "Evaluation", "n_test"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in sorted(results, key=model_name):
        minutes = f"{r['train_seconds'] / 60:.1f}" if r.get("train_seconds") is not None else "-"
        cells = [model_name(r), f"{r['clean']:.2f}", _get(r["pgd"], "4/255"), _get(r["pgd"], "8/255")]
        cells += [_get(r.get("autoattack", {}), k) for k in aa_keys] + [minutes, eval_text(r), str(r.get("n_test", "?"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _get(d, key):
    return f"{d[key]:.2f}" if key in d else "-"


def plot(results, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in sorted(results, key=model_name):
        points = sorted([(0.0, r["clean"])] + [(float(Fraction(k)) * 255, v) for k, v in r["pgd"].items()])
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=model_name(r))
    ax.set_xlabel("L-inf eps (x/255)")
    ax.set_ylabel("accuracy under PGD (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(argv=None):
    p = Parser(prog="python -m utils.report", description="Table and plot from evaluation results.")
    p.add_argument("paths", nargs="+", help="run directories (searched for eval.json) or eval.json files")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    p.add_argument("--plot", default=None, help="PNG of accuracy against eps (default: robust_accuracy.png in the first dir)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    results = find_results(args.paths)
    if not results:
        raise UsageError(f"no eval.json under {', '.join(args.paths)}; run evaluate_*.py on a checkpoint first")
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
