"""The seed's table in one command, at the smoke scale on generated data."""
import os
import signal
import subprocess
import sys
import time

from conftest import ROOT, run_script
from utils.reproduce import SCALES, all_rows, train_argv
from utils.run import read_jsonl


def table_rows(path):
    return [line for line in path.read_text().splitlines() if line.startswith("| ") and not line.startswith("| Model")]


def test_smoke_table_trains_evaluates_and_reports_every_row_once(tmp_path, tiny_data):
    args = ["-m", "utils.reproduce", "--scale", "smoke", "--data-dir", tiny_data, "--out", tmp_path, "--device", "cpu"]
    first = run_script(*args, timeout=900)
    rows = all_rows()
    assert len(rows) == 9 and "row 9/9" in first.stdout
    lines = table_rows(tmp_path / "results.md")
    assert len(lines) == 9
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert all(float(c) >= 0 for c in cells[1:4]), line  # clean, PGD 4/255, PGD 8/255 measured
    assert "CF-AMC-SSL" in (tmp_path / "results.md").read_text() and (tmp_path / "results.png").stat().st_size > 0
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")}
    again = run_script(*args, timeout=300)
    assert "estimated remaining" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")} == stamps  # nothing retrained or re-evaluated


def test_a_row_killed_mid_training_resumes(tmp_path, tiny_data):
    row = next(r for r in all_rows() if r.key == "crop-empssl-free")

    class Args:
        data, data_dir, seed, device, out = "cifar10", str(tiny_data), 0, "cpu", str(tmp_path)

    argv = train_argv(row, SCALES["smoke"], Args)
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
    assert out.count("python main_") == 9 and out.count("python evaluate_") == 9
    assert "--epochs 3 " in out and "--epochs 50 " in out and "--epochs 17 " in out  # 30, 500 and 167 epochs x 0.1
    assert "estimated training time" in out


def test_an_output_folder_of_another_scale_is_refused(tmp_path, tiny_data):
    (tmp_path / "reproduce.json").write_text('{"scale": "small", "seed": 0, "data": "cifar10", "data_dir": "x"}')
    proc = run_script("-m", "utils.reproduce", "--scale", "smoke", "--data-dir", tiny_data, "--out", tmp_path,
                      "--rows", "crop-empssl-free", check=False)
    assert proc.returncode == 2 and "another plan" in proc.stderr and "Traceback" not in proc.stderr
