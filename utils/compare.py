"""The two-scale comparison of ``experiments/comparison.py``: every seed's row, the means over seeds, each
candidate's lead over each baseline against the goal's margins, the best candidate and its gap to the goal, and a
figure of accuracy against scale.

    python -m utils.compare --results results --out results/comparison
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

from experiments.comparison import BASELINES, CANDIDATES, COST_CEILING, MARGINS, METRICS, SCALES, SEEDS, result_path
from experiments.scales import SCALES as SCALE_SETTINGS
from experiments.tables import markdown_table, num
from utils.core.cli import flag_of, run_main
from utils.core.errors import UsageError
from utils.evaluation.results import training_seconds

NOT_RECORDED = "not recorded in the file"


def seed_values(path: Path, scale: str, seed: int) -> dict:
    """One evaluation's numbers (METRICS' keys, ``minutes``, ``machine``), after checking that it is the seed and
    scale the folder says."""
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read {path}: {e}") from None
    cfg = result.get("train_config") or {}
    if cfg.get("seed") != seed:
        raise UsageError(f"{path} was trained with seed {cfg.get('seed')}, not {seed}: move it to the seed's folder")
    for key in ("width", "subset"):
        value = SCALE_SETTINGS[scale].train[key]
        if cfg.get(key) != value:
            raise UsageError(f"{path} was trained with {flag_of(key)} {cfg.get(key)}, not the {scale} scale's {value}")
    values = {key: result[field] if radius is None else (result.get(field) or {}).get(radius)
              for key, (_, field, radius) in METRICS.items()}
    seconds = training_seconds(result)
    machines = result.get("train_machines")
    return {**values, "minutes": None if seconds is None else seconds / 60,
            "machine": "; ".join(machines) if machines else NOT_RECORDED,
            "evaluated_on": result.get("machine") or NOT_RECORDED, "protocol": protocol_words(result)}


def protocol_words(result: dict) -> str:
    """The data, protocol and attacks of one evaluation, in words (a figure of it must name them); the subsets'
    hashes say which images, so two rows on the same words were tested on the same images."""
    cfg, subsets = result.get("train_config") or {}, result.get("subsets") or {}
    if "n_test" not in result or "test" not in subsets:
        return NOT_RECORDED
    aa = subsets.get("autoattack")
    attacks = f"PGD-{(result.get('settings') or {}).get('pgd_steps')}" + (
        f", AutoAttack (standard) on {aa['n']:,} of them (sha1 {aa['sha1']})" if aa else "")
    return (f"{cfg.get('data')} data; {str(result.get('protocol')).upper()} on "
            f"{result.get('features')} features of {result.get('n_train', 0):,} training images; "
            f"{result['n_test']:,} test images (sha1 {subsets['test']['sha1']}); {attacks}")


def collect(results: Path) -> dict:
    """{scale: {row: {seed: values}}} for every evaluation present; absent seeds are left out."""
    return {scale: {row: {seed: seed_values(path, scale, seed) for seed in SEEDS
                          if (path := result_path(results, scale, seed, row)).exists()}
                    for row in (*CANDIDATES, *BASELINES)} for scale in SCALES}


def mean(runs: dict, key: str):
    values = [v[key] for v in runs.values() if v[key] is not None]
    return statistics.fmean(values) if values else None


def fastest_seed(runs: dict):
    """The values of the row's seed that trained in the fewest minutes (its cost, as load on a shared machine only
    ever adds time); None where no seed's minutes are known."""
    timed = [v for v in runs.values() if v["minutes"] is not None]
    return min(timed, key=lambda v: v["minutes"]) if timed else None


def fastest(runs: dict):
    seed = fastest_seed(runs)
    return None if seed is None else seed["minutes"]


def spread(runs: dict, key: str) -> str:
    values = [v[key] for v in runs.values() if v[key] is not None]
    return f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""


def seed_table(table: dict) -> list:
    header = ["Scale", "Row", "Seed", *(title for title, _, _ in METRICS.values()), "train min", "trained on",
              "evaluated on"]
    rows = [[scale, row, seed, *(num(v[key]) for key in METRICS), num(v["minutes"]), v["machine"], v["evaluated_on"]]
            for scale, by_row in table.items() for row, runs in by_row.items() for seed, v in runs.items()]
    return markdown_table(header, rows)


def protocol_lines(table: dict) -> list:
    """Per scale, each data-and-protocol its evaluations used, with the rows that used it: one line each where
    the comparison is like with like."""
    lines = []
    for scale, by_row in table.items():
        used = {}
        for row, runs in by_row.items():
            for v in runs.values():
                used.setdefault(v["protocol"], set()).add(row)
        lines += [f"- {scale}: {protocol}" + ("" if len(used) == 1 else f" ({', '.join(sorted(rows))})")
                  for protocol, rows in used.items()]
    return lines


def mean_table(table: dict) -> list:
    header = ["Scale", "Row", "Seeds", *(title for title, _, _ in METRICS.values()), "train min (fastest seed)"]
    rows = [[scale, row, ", ".join(map(str, runs)) or "none",
             *(num(mean(runs, key)) + spread(runs, key) for key in METRICS), num(fastest(runs))]
            for scale, by_row in table.items() for row, runs in by_row.items()]
    return markdown_table(header, rows)


def goal_table(table: dict) -> list:
    """Per scale, candidate and baseline, the candidate's lead of means on each metric the goal names (a mark where it
    clears the margin); then per scale and candidate whether the goal is met (every margin, every seed of every
    row, and no more training minutes than the cost ceiling, each row's fastest seed), and the best candidate."""
    header = ["Scale", "Candidate", "over", *(f"{METRICS[key][0]} (≥ {MARGINS[key]:+.0f})" for key in MARGINS)]
    rows = [[scale, row, base, *(lead_cell(lead(by_row[row], by_row[base], key), key) for key in MARGINS)]
            for scale, by_row in table.items() for row in CANDIDATES for base in BASELINES if by_row[row]]
    verdicts = [verdict(scale, row, by_row) for scale, by_row in table.items() for row in CANDIDATES if by_row[row]]
    return [*markdown_table(header, rows), "", *verdicts, "", *(best_line(scale, by_row) for scale, by_row in
                                                                table.items())]


def lead_cell(value, key) -> str:
    return "-" if value is None else f"{value:+.1f}" + (" ✓" if clears(value, key) else "")


def clears(value, key) -> bool:
    return value is not None and value >= MARGINS[key]


def verdict(scale: str, row: str, by_row: dict) -> str:
    rows = (row, *BASELINES)
    short = [f"{name} ({len(by_row[name])} of {len(SEEDS)} measured)" for name in rows
             if len(by_row[name]) < len(SEEDS)]
    ours, ceiling = (fastest_seed(by_row[name]) for name in (row, COST_CEILING))
    minutes = [None if v is None else v["minutes"] for v in (ours, ceiling)]
    cheap = None not in minutes and minutes[0] <= minutes[1]
    leads = [clears(lead(by_row[row], by_row[base], key), key) for base in BASELINES for key in MARGINS]
    met = not short and cheap and all(leads)
    seeds = f"; seeds short: {', '.join(short)}" if short else ""
    machines = ("" if None in (ours, ceiling) or ours["machine"] == ceiling["machine"]
                else f" (trained on {ours['machine']} against {ceiling['machine']})")
    return (f"- {scale}, {row}: goal {'met' if met else 'not met'}; {sum(leads)} of {len(leads)} margins cleared; "
            f"training minutes (fastest seed) {num(minutes[0])} against {COST_CEILING}'s {num(minutes[1])}"
            f"{machines}{seeds}")


def shortfall(by_row: dict, row: str):
    """(points, metric, baseline): how far the candidate's mean falls short of the goal's margin where it falls
    shortest (0 where it clears every margin); None while a lead is unmeasured."""
    gaps = [(MARGINS[key] - lead(by_row[row], by_row[base], key), key, base)
            for base in BASELINES for key in MARGINS if lead(by_row[row], by_row[base], key) is not None]
    if len(gaps) < len(BASELINES) * len(MARGINS):
        return None
    points, key, base = max(gaps)
    return max(points, 0.0), key, base


def best_line(scale: str, by_row: dict) -> str:
    """The candidate whose worst margin falls least short, and by how much: the measured gap to the goal."""
    gaps = {row: gap for row in CANDIDATES if (gap := shortfall(by_row, row)) is not None}
    if not gaps:
        return f"- {scale}: no candidate measured against every baseline"
    row = min(gaps, key=lambda name: gaps[name][0])
    points, key, base = gaps[row]
    seeds = ", ".join(map(str, by_row[row]))
    if points == 0:
        return f"- {scale}: best candidate {row} (seeds {seeds}) clears every margin over every baseline"
    return (f"- {scale}: best candidate {row} (seeds {seeds}), {points:.1f} points short of the goal at its worst "
            f"margin ({METRICS[key][0]} over {base})")


def lead(candidate: dict, baseline: dict, key: str):
    ours, theirs = mean(candidate, key), mean(baseline, key)
    return None if ours is None or theirs is None else ours - theirs


def plot_by_scale(table: dict, path: Path) -> None:
    """One panel per metric: each row's mean over seeds at each scale, the bars spanning its seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 5), sharey=False)
    for ax, (key, (title, _, _)) in zip(axes, METRICS.items()):
        rows = (*CANDIDATES, *BASELINES)
        for k, row in enumerate(rows):
            points = row_points(table, row, key)
            if points:
                offset = 0.04 * (k - (len(rows) - 1) / 2)  # rows at one scale side by side, their bars apart
                means = [statistics.fmean(values) for _, values in points]
                ax.errorbar([x + offset for x, _ in points], means, marker="o", capsize=4, label=row_label(table, row),
                            yerr=[[m - min(v) for m, (_, v) in zip(means, points)],
                                  [max(v) - m for m, (_, v) in zip(means, points)]])
        ax.set(title=title, xticks=range(len(SCALES)), xticklabels=[scale_words(s) for s in SCALES],
               ylabel="accuracy (%)")
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=7)
    fig.suptitle(figure_caption(table), fontsize=7)
    fig.tight_layout(rect=(0, 0.1, 1, 0.9))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def row_points(table: dict, row: str, key: str) -> list:
    """[(scale's index, [each seed's value])] for the scales where the row has a value of ``key``."""
    points = [(x, [v[key] for v in table[scale][row].values() if v[key] is not None]) for x, scale in enumerate(SCALES)]
    return [(x, values) for x, values in points if values]


def row_label(table: dict, row: str) -> str:
    """The row's name with, per scale, its seeds and its fastest training minutes."""
    parts = [f"{scale} seeds {','.join(map(str, runs)) or 'none'}, {num(fastest(runs))} min"
             for scale in SCALES if (runs := table[scale][row]) is not None]
    return f"{row}\n({'; '.join(parts)})"


def figure_caption(table: dict) -> str:
    machines = sorted({v[key] for by_row in table.values() for runs in by_row.values() for v in runs.values()
                       for key in ("machine", "evaluated_on")} - {NOT_RECORDED})
    return "\n".join(["Mean over training seeds (bars: their range); training minutes: each row's fastest seed",
                       *(line[2:] for line in protocol_lines(table)), "machines: " + ("; ".join(machines) or "none")])


def scale_words(scale: str) -> str:
    sizes = SCALE_SETTINGS[scale].train
    return f"{scale}\n{sizes['subset']:,} images, width {sizes['width']}"


def compare(argv=None) -> str:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    table = collect(Path(args.results))
    text = "\n".join(["# Two-scale comparison (means ± standard deviation over training seeds)", "",
                      *mean_table(table), "", "## The goal", "", *goal_table(table), "", "## Data and protocol",
                      "", *protocol_lines(table), "", "## Every seed", "", *seed_table(table), ""])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text)
    plot_by_scale(table, out / "by-scale.png")
    print(text)
    return text


def build_parser():
    p = argparse.ArgumentParser(prog="python -m utils.compare", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--results", default="results", help="the folder of <scale>/ (seed 0) and <scale>/seed-<N>/ results")
    p.add_argument("--out", required=True, help="folder for table.md and by-scale.png (rewritten each time)")
    return p


if __name__ == "__main__":
    run_main(compare)
