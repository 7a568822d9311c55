"""The one table writer (markdown), the number format of a cell, and the plots of a plan's results."""
import math
from fractions import Fraction

from utils.evaluation.results import training_seconds


def markdown_table(header, rows) -> list:
    """Lines of a markdown table: ``header`` (cells) and ``rows`` (lists of cells, any shorter row padded)."""
    width = len(header)
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * width]
    return lines + ["| " + " | ".join([*map(str, row), *[""] * (width - len(row))]) + " |" for row in rows]


def num(value, digits=1) -> str:
    """A cell: the number to ``digits`` places, '-' where there is none."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def plot_results(results, path) -> None:
    """Left: accuracy against eps per row. Right: robustness at 4/255 against training minutes (the cost claim).

    ``results``: {row key: evaluation result}; one colour and one marker per row in both panels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, cost) = plt.subplots(1, 2, figsize=(14, 5.5))
    cycle = plt.get_cmap("tab20").colors
    styles = {key: (cycle[k % len(cycle)], "os^vDP*Xhp<>"[k % 12]) for k, key in enumerate(results)}
    for key, r in results.items():
        eps = sorted((float(Fraction(k)) * 255, v) for k, v in r["pgd"].items())
        colour, marker = styles[key]
        curves.plot([0.0] + [e for e, _ in eps], [r["clean"]] + [v for _, v in eps], marker=marker, color=colour,
                    label=key)
    steps = sorted({str((r.get("settings") or {}).get("pgd_steps", "?")) for r in results.values()})
    curves.set(xlabel="L-inf eps (x/255)", ylabel=f"accuracy: clean, then under PGD-{'/'.join(steps)} (%)")
    curves.legend(fontsize=7)
    draw_cost(cost, results, styles, steps)
    for ax in (curves, cost):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_cost(ax, results, styles, steps) -> None:
    points = {key: ((training_seconds(r) or 0) / 60, r["pgd"].get("4/255", math.nan)) for key, r in results.items()}
    for key, (x, y) in points.items():
        colour, marker = styles[key]
        ax.scatter(x, y, color=colour, marker=marker, label=key)
    longest = max(x for x, _ in points.values()) or 1
    strongest = max((y for _, y in points.values() if not math.isnan(y)), default=0) or 1
    ax.set(xlabel="training time (min)", ylabel=f"accuracy under PGD-{'/'.join(steps)} at 4/255 (%)",
           xlim=(0, 1.15 * longest), ylim=(-0.05 * strongest, 1.15 * strongest))
    ax.legend(fontsize=7)
