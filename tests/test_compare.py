import json

import pytest

from experiments.comparison import ABLATION_FOLDERS, BASELINES, CANDIDATES, SCALES, SEEDS, result_path
from experiments.scales import SCALES as SCALE_FLAGS
from utils.compare import compare
from utils.core.errors import UsageError

SIMCLR, EMPSSL = "crop-simclr-free", "crop-empssl-free"
CANDIDATE, ABLATED = CANDIDATES[0], "free-2-epochs"  # a row of utils.reproduce, an entry of utils.ablate


def write_result(results, scale, seed, row, clean, pgd4, aa4, aa8, minutes, config=(), machine="a CPU"):
    sizes = SCALE_FLAGS[scale].train
    cfg = {"seed": seed, "width": sizes["width"], "subset": sizes["subset"], **dict(config)}
    n_test = 1000 if scale == "small" else 2000
    result = {"clean": clean, "pgd": {"4/255": pgd4, "8/255": pgd4 / 2}, "autoattack": {"4/255": aa4, "8/255": aa8},
              "train_seconds": minutes * 60, "train_config": {"data": "imagefolder", **cfg},
              "train_machines": [machine], "machine": "another CPU", "protocol": "slf", "features": "pre",
              "n_train": 10000, "n_test": n_test, "settings": {"pgd_steps": 20},
              "subsets": {"test": {"n": n_test, "sha1": f"test{scale}"}, "autoattack": {"n": 200, "sha1": "aa"}}}
    path = result_path(results, scale, seed, row)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))


def write_all(results, candidate_aa8):
    """Every row, seed and scale: the candidate leads every baseline by the goal's margins exactly, except at
    8/255 AutoAttack, where its seeds are ``candidate_aa8`` (the baselines' means are 10)."""
    for scale in SCALES:
        for seed in SEEDS:
            write_result(results, scale, seed, EMPSSL, 40.0, 20.0, 15.0, 10.0, 3.0)
            write_result(results, scale, seed, SIMCLR, 42.0 + seed - 1, 25.0, 20.0 + seed - 1, 10.0 - seed + 1, 4.0)
            write_result(results, scale, seed, CANDIDATE, 42.0, 27.0, 23.0, candidate_aa8[seed], 3.5 + 9 * seed)


def goal_line(text, scale, row=CANDIDATE):
    return next(line for line in text.splitlines() if line.startswith(f"- {scale}, {row}: goal"))


def best_line(text, scale):
    return next(line for line in text.splitlines() if line.startswith(f"- {scale}: best candidate"))


def test_means_over_seeds_and_the_goal_met_at_exactly_the_margins(tmp_path):
    write_all(tmp_path / "results", candidate_aa8=(12.0, 13.0, 14.0))
    text = compare(["--results", str(tmp_path / "results"), "--out", str(tmp_path / "out")])
    simclr_mean = next(line for line in text.splitlines() if line.startswith(f"| small | {SIMCLR} | 0, 1, 2 |"))
    assert "| 42.0 ± 1.0 | 25.0 ± 0.0 | 20.0 ± 1.0 | 12.5 ± 0.0 | 10.0 ± 1.0 | 4.0 |" in simclr_mean
    assert f"| medium | {CANDIDATE} | {SIMCLR} | +3.0 ✓ | +3.0 ✓ | +2.0 ✓ | +0.0 ✓ |" in text
    for scale in SCALES:
        assert goal_line(text, scale) == (f"- {scale}, {CANDIDATE}: goal met; 8 of 8 margins cleared; training "
                                          f"minutes (fastest seed) 3.5 against {SIMCLR}'s 4.0")
        assert best_line(text, scale) == (f"- {scale}: best candidate {CANDIDATE} (seeds 0, 1, 2) clears every "
                                          "margin over every baseline")
    assert len([line for line in text.splitlines()
                if line.startswith("| small |") and "| a CPU | another CPU |" in line]) == 9
    assert ("- small: imagefolder data; SLF on pre features of 10,000 training images; 1,000 test images "
            "(sha1 testsmall); PGD-20, AutoAttack (standard) on 200 of them (sha1 aa)") in text.splitlines()
    assert "\n- medium: imagefolder data; SLF on pre features of 10,000 training images; 2,000 test images" in text
    assert (tmp_path / "out" / "table.md").read_text() == text
    assert (tmp_path / "out" / "by-scale.png").stat().st_size > 10_000


def test_a_row_that_trains_longer_than_the_ceiling_does_not_meet_the_goal(tmp_path):
    results = tmp_path / "results"
    write_all(results, candidate_aa8=(12.0, 13.0, 14.0))
    for seed in SEEDS:
        write_result(results, "medium", seed, CANDIDATE, 42.0, 27.0, 23.0, 13.0, 4.1)
    text = compare(["--results", str(results), "--out", str(tmp_path / "out")])
    assert goal_line(text, "medium").startswith(f"- medium, {CANDIDATE}: goal not met; 8 of 8 margins cleared")
    assert goal_line(text, "small").startswith(f"- small, {CANDIDATE}: goal met")


def test_a_margin_short_or_a_seed_missing_is_not_met(tmp_path):
    results = tmp_path / "results"
    write_all(results, candidate_aa8=(12.0, 13.0, 13.5))
    result_path(results, "medium", 2, EMPSSL).unlink()
    text = compare(["--results", str(results), "--out", str(tmp_path / "out")])
    assert f"| small | {CANDIDATE} | {SIMCLR} | +3.0 ✓ | +2.8 | +2.0 ✓ | +0.0 ✓ |" in text
    assert goal_line(text, "small").startswith(f"- small, {CANDIDATE}: goal not met; 6 of 8 margins cleared")
    assert goal_line(text, "medium").endswith(f"seeds short: {EMPSSL} (2 of 3 measured)")
    assert f"| medium | {EMPSSL} | 0, 1 |" in text


def test_a_result_in_another_seeds_or_scales_folder_is_refused_in_one_line(tmp_path):
    results = tmp_path / "results"
    write_result(results, "small", 1, BASELINES[0], 40.0, 20.0, 15.0, 10.0, 3.0, {"seed": 0})
    with pytest.raises(UsageError, match="trained with seed 0, not 1"):
        compare(["--results", str(results), "--out", str(tmp_path / "out")])
    write_result(results, "small", 1, BASELINES[0], 40.0, 20.0, 15.0, 10.0, 3.0, {"width": 16})
    with pytest.raises(UsageError, match="trained with --width 16, not the small scale's 8"):
        compare(["--results", str(results), "--out", str(tmp_path / "out")])


def test_rows_tested_on_different_images_are_named_with_their_protocol(tmp_path):
    results = tmp_path / "results"
    write_all(results, candidate_aa8=(12.0, 13.0, 14.0))
    path = result_path(results, "small", 1, SIMCLR)
    result = json.loads(path.read_text())
    result["subsets"]["test"]["sha1"] = "other"
    path.write_text(json.dumps(result))
    lines = compare(["--results", str(results), "--out", str(tmp_path / "out")]).splitlines()
    small = [line for line in lines if line.startswith("- small: imagefolder")]
    assert len(small) == 2 and small[1].endswith(f"(sha1 aa) ({SIMCLR})")
    assert small[0].endswith(f"(sha1 aa) ({', '.join(sorted((EMPSSL, CANDIDATE, SIMCLR)))})")


def test_an_ablation_candidate_is_read_from_its_seeds_entries_and_the_best_candidate_is_named_with_its_gap(tmp_path):
    results = tmp_path / "results"
    write_all(results, candidate_aa8=(12.0, 13.0, 13.5))  # short by 0.2 at AA 8/255 over SimCLR free (mean 10)
    for seed in SEEDS:  # short by 1.0 at PGD-20 4/255 over SimCLR free (25), and trained on another machine
        write_result(results, "small", seed, ABLATED, 43.0, 26.0, 24.0, 14.0, 3.0, machine="a GPU")
    assert result_path(results, "small", 2, ABLATED) == (
        results / ABLATION_FOLDERS["small"] / f"{ABLATED}-seed-2" / "aa" / "eval-slf-pre-v1-last.json")
    text = compare(["--results", str(results), "--out", str(tmp_path / "out")])
    assert f"| small | {ABLATED} | 0, 1, 2 | 43.0 ± 0.0 | 26.0 ± 0.0 | 24.0 ± 0.0 |" in text
    assert f"| small | {ABLATED} | {SIMCLR} | +4.0 ✓ | +4.0 ✓ | +1.0 | +1.0 ✓ |" in text
    assert goal_line(text, "small", ABLATED) == (
        f"- small, {ABLATED}: goal not met; 7 of 8 margins cleared; training minutes (fastest seed) 3.0 against "
        f"{SIMCLR}'s 4.0 (trained on a GPU against a CPU)")
    assert best_line(text, "small") == (f"- small: best candidate {CANDIDATE} (seeds 0, 1, 2), 0.2 points short of "
                                        f"the goal at its worst margin (AA 8/255 over {SIMCLR})")
    assert not any(line.startswith(f"- medium, {ABLATED}") for line in text.splitlines())  # no medium seeds
