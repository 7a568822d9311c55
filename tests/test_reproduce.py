"""The paper's table in one command, at the smoke scale on generated data."""
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import utils.reproduce as reproduce_module
from experiments.runner import RESULT
from experiments.scales import scaled_train_flags
from utils.core.checkpoint import load_checkpoint
from utils.core.cli import to_argv
from utils.core.errors import UsageError
from utils.core.files import append_jsonl, read_jsonl, write_json
from utils.reproduce import (
    SCALES,
    all_rows,
    build_parser,
    fit_samples,
    reproduce,
    run_row,
    select_rows,
    train_argv,
    write_results,
)

from conftest import ROOT, run_script


def table_rows(path):
    return [line for line in path.read_text().splitlines() if line.startswith("| ") and not line.startswith("| Model")]


# Both methods, every regime (distill with its teacher stage), both presets and one of the project's own rows; the
# dry run's test checks every row's commands, test_train every script's run.
# A row of each regime: PGD, free (patches), and the distilled row, whose teacher is a standard run.
SMOKE_ROWS = ["crop-simclr-pgd", "patch-empssl-free", "crop-empssl-distill-b50-m1"]


@pytest.mark.slow
def test_smoke_table_trains_evaluates_and_reports_each_row_once(tmp_path, tiny_data):
    args = ["-m", "utils.reproduce", "--scale", "smoke", "--data-dir", tiny_data, "--out", tmp_path, "--device", "cpu",
            "--rows", *SMOKE_ROWS]
    first = run_script(*args, timeout=900)
    rows = select_rows(SMOKE_ROWS)
    n = len(rows)
    assert not any(r.optional for r in rows) and f"row {n}/{n}" in first.stdout
    assert {r.regime for r in rows} == {"pgd", "free", "distill"}
    assert load_checkpoint(tmp_path / "crop-empssl-distill-b50-m1" / "teacher" / "last.pt")["regime"] == "standard"
    lines = table_rows(tmp_path / "results.md")
    assert len(lines) == n
    for row, line in zip(rows, lines):  # each row shows what its own evaluation measured
        cells = [c.strip() for c in line.strip("|").split("|")]
        r = json.loads((tmp_path / row.key / RESULT).read_text())
        assert cells[1:4] == [f"{r['clean']:.1f}", f"{r['pgd']['4/255']:.1f}", f"{r['pgd']['8/255']:.1f}"], line
    # the toy's replays, views and batch are not the paper's settings: no row takes the paper's or the project's name
    assert "CF-AMC-SSL" not in (tmp_path / "results.md").read_text() and (tmp_path / "results.png").stat().st_size > 0
    # the data named by what it holds, as the evaluations recorded it, not by its folder's name alone
    named = "cifar10 `cifar0` (64 training and 40 test images, 10 classes; test images sha1 "
    assert named in (tmp_path / "results.md").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")}
    again = run_script(*args, timeout=300)
    assert "estimated remaining" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")} == stamps  # nothing retrained or re-evaluated


@pytest.mark.slow
def test_a_row_killed_mid_training_resumes(tmp_path, tiny_data):
    row = next(r for r in all_rows() if r.key == "crop-empssl-free")

    args = build_parser().parse_args(["--data-dir", str(tiny_data), "--device", "cpu", "--out", str(tmp_path)])
    argv = train_argv(row, SCALES["smoke"], args)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / f"{row.script}.py"), *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / row.key / "train" / "metrics.jsonl"
    deadline = time.time() + 120
    while not metrics.exists() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM  # stopped before its second epoch ended
    run_script("-m", "utils.reproduce", "--scale", "smoke", "--data-dir", tiny_data, "--out", tmp_path, "--device",
               "cpu", "--rows", row.key, timeout=300)
    assert [r["epoch"] for r in read_jsonl(metrics)] == [1, 2]
    assert len(table_rows(tmp_path / "results.md")) == 1


def test_dry_run_prints_every_command_and_the_cost(tiny_data):
    out = run_script("-m", "utils.reproduce", "--scale", "small", "--data-dir", tiny_data, "--out", "unused",
                     "--dry-run", "--passes-per-second", "1000").stdout
    n = len(select_rows(None))  # the paper's seven, two baselines and the project's own four rows
    # one training command per row, and each distilled row's teacher before its student
    assert n == 13 and out.count("python main_") == n + 2 and out.count("python evaluate_") == n
    assert out.index("python main_empssl.py") < out.index("--teacher ") and "/teacher/last.pt" in out
    assert "--replays 1 --teacher" in out and "--replays 2 --teacher" in out
    assert "--clean-views 4 --per-view-forward" in out and "--attack-style isolated" not in out
    assert "--epochs 3 " in out and "--epochs 50 " in out and "--epochs 17 " in out  # 30, 500 and 167 epochs x 0.1
    assert "estimated training time" in out


def test_an_output_folder_of_another_scale_is_refused(tmp_path, tiny_data):
    (tmp_path / "reproduce.json").write_text('{"scale": "small", "seed": 0, "data": "cifar10", "data_dir": "x"}')
    proc = run_script("-m", "utils.reproduce", "--scale", "smoke", "--data-dir", tiny_data, "--out", tmp_path,
                      "--rows", "crop-empssl-free", check=False)
    assert proc.returncode == 2 and "another plan" in proc.stderr and "Traceback" not in proc.stderr


def test_results_table_has_every_measure_the_paper_columns_and_no_local_paths(tmp_path):
    rows = [r for r in all_rows() if r.key in ("crop-empssl-free", "crop-empssl-pgd", "crop-simclr-pgd")]
    done = tmp_path / "out" / "crop-empssl-free"
    (done / "train").mkdir(parents=True)
    write_json(done / RESULT, {
        "method": "empssl", "regime": "free", "clean": 37.44, "pgd": {"4/255": 12.7, "8/255": 2.0},
        "autoattack": {"4/255": 12.5, "8/255": 1.5}, "n_test": 1000, "autoattack_samples": 200, "train_seconds": 234.6,
        "checkpoint": str(done / "train" / "last.pt"),
        "train_config": {"preset": "crop", "num_views": 16, "epochs": 1}})
    for epoch, knn in ((1, 30.0), (2, 33.6)):
        append_jsonl(done / "train" / "metrics.jsonl", {"epoch": epoch, "knn": knn})

    args = build_parser().parse_args(["--data", "imagefolder", "--data-dir", str(tmp_path / "cifar10-jpeg"),
                                      "--device", "cpu", "--out", str(tmp_path / "out")])
    write_results(rows, SCALES["small"], args, {"crop-simclr-pgd": "failed (exit 1)"})
    text = (tmp_path / "out" / "results.md").read_text()
    lines = table_rows(tmp_path / "out" / "results.md")
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")] for line in lines}
    ours = next(c for name, c in cells.items() if "CF-AMC-SSL" in name)
    assert ours[1:8] == ["37.4", "12.7", "2.0", "12.5", "1.5", "33.6", "3.9"]  # clean, PGD, AA, last kNN, minutes
    assert ours[8:] == ["75.88", "55.97", "33.34", "97.00"]
    assert cells["crop-empssl-pgd: not run"][1:] == [""] * 11 and "crop-simclr-pgd: failed (exit 1)" in cells
    assert str(tmp_path) not in text and "`cifar10-jpeg`" in text and "torch threads" in text
    assert (tmp_path / "out" / "results.png").stat().st_size > 0


def test_a_row_is_done_only_if_its_result_evaluated_its_last_pt(tmp_path):
    row = next(r for r in all_rows() if r.key == "crop-empssl-free")

    class Args:
        out = str(tmp_path)

    (tmp_path / row.key / "train").mkdir(parents=True)
    last = tmp_path / row.key / "train" / "last.pt"
    last.write_bytes(b"the checkpoint that was evaluated")
    write_json(tmp_path / row.key / RESULT,
               {"checkpoint_identity": {"sha1": hashlib.sha1(last.read_bytes()).hexdigest()[:16]}})
    assert run_row(row, SCALES["smoke"], Args) == "done"
    last.write_bytes(b"a checkpoint trained on since")
    assert "evaluated another checkpoint" in run_row(row, SCALES["smoke"], Args)


def test_a_row_run_with_other_arguments_is_refused_not_taken_as_done(tmp_path, tiny_data, monkeypatch):
    argv = ["--scale", "smoke", "--data-dir", str(tiny_data), "--out", str(tmp_path), "--device", "cpu",
            "--rows", "crop-empssl-free"]
    monkeypatch.setattr(reproduce_module, "run_row", lambda row, scale, args: "done")  # as if finished earlier
    monkeypatch.setattr(reproduce_module, "write_results", lambda *_: None)
    reproduce(argv)
    recorded = json.loads((tmp_path / "reproduce.json").read_text())["rows"]["crop-empssl-free"]
    assert "--finetune-epochs" in recorded["evaluate"] and "--resume" in recorded["train"]
    smoke = SCALES["smoke"]
    monkeypatch.setitem(SCALES, "smoke", dataclasses.replace(smoke, evaluate={**smoke.evaluate, "pgd_steps": 2}))
    with pytest.raises(UsageError, match="crop-empssl-free was run with other evaluate arguments"):
        reproduce(argv)


def test_the_isolated_variants_are_optional_rows_that_train_with_the_isolated_step(tmp_path):
    rows = {r.key: r for r in all_rows()}
    paper_pgd = [k for k, r in rows.items() if r.regime == "pgd" and r.paper]
    assert len(paper_pgd) == 4 and all(rows[f"{k}-isolated"].optional for k in paper_pgd)
    assert not any(r.optional for r in select_rows(None)) and select_rows(["crop-empssl-pgd-isolated"])

    args = build_parser().parse_args(["--data-dir", str(tmp_path), "--device", "cpu", "--out", str(tmp_path)])
    from utils.engine.train import parse_config

    for key, style in (("crop-empssl-pgd", "original"), ("crop-empssl-pgd-isolated", "isolated")):
        row = rows[key]
        cfg = parse_config(row.method, row.regime, None, train_argv(row, SCALES["small"], args))[0]
        assert cfg["attack_style"] == style and cfg["out_dir"].endswith(f"{key}/train")


def test_the_header_says_how_the_papers_settings_were_carried_to_other_data():
    from utils.reproduce import carried_over

    def words(*flags):
        return carried_over(build_parser().parse_args(["--out", "x", *flags]))

    assert words() == ""
    assert words("--data", "imagefolder").endswith("carried over unchanged to imagefolder at images of their own size.")
    assert words("--data", "stl10", "--image-size", "64", "--view-size", "48").endswith(
        "to stl10 at 64x64 images, cut into 48x48 views.")


def test_the_wide_small_scale_differs_from_small_in_the_network_alone():
    small, wide, medium = SCALES["small"], SCALES["small-w16"], SCALES["medium"]
    changed = {key for key in small.train if small.train[key] != wide.train[key]}
    assert changed == {"width", "hidden_dim"} and wide.train.keys() == small.train.keys()
    assert all(wide.train[key] == medium.train[key] for key in changed)
    assert (wide.evaluate, wide.epoch_factor) == (small.evaluate, small.epoch_factor)


def test_settings_become_flags_in_their_order_with_switches_lists_and_omissions():
    settings = {"protocol": "slf", "eps": ("4/255", "8/255"), "no_train_augment": True, "screen": False,
                "teacher": None, "subset_test": 2000, "pgd_steps": 0}
    assert to_argv(settings) == ["--protocol", "slf", "--eps", "4/255", "8/255", "--no-train-augment",
                                 "--subset-test", "2000", "--pgd-steps", "0"]


def test_the_medium_scales_commands_are_the_flags_they_were_written_as():
    """The scales' settings written back as flags: the command lines every recorded medium row was run with."""
    medium = SCALES["medium"]
    assert to_argv(medium.train) == ["--width", "16", "--hidden-dim", "1024", "--subset", "10000", "--knn-test",
                                     "2000"]
    assert to_argv(medium.evaluate) == ["--subset-train", "10000", "--no-train-augment", "--subset-test", "2000",
                                        "--autoattack", "--autoattack-samples", "500"]
    assert to_argv(medium.evaluate_with("screen"))[-3:] == ["--screen", "--autoattack-samples", "500"]
    assert fit_samples(medium.evaluate, {"train": 5000, "test": 8000})["subset_train"] == 5000
    assert scaled_train_flags("empssl", "free", medium)[:2] == ["--epochs", "1"]
    assert "--pgd-steps" in scaled_train_flags("simclr", "pgd", SCALES["smoke"])
    assert "--pgd-steps" not in scaled_train_flags("simclr", "standard", SCALES["smoke"])  # a flag it does not have
