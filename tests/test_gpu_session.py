"""The GPU session's one command, known to work before a GPU is seen: the smoke run end to end, its time boxes,
and session.json rewritten complete after every stage."""
import argparse
import dataclasses
import json
import os
import time

import pytest

from benchmarks import gpu_session

from conftest import run_script

STAGES = list(gpu_session.STAGES)


def smoke_data(tiny_data):
    """The real JPEG copy where it is set ($CFAMC_CIFAR10_JPEG), else the tiny pickled CIFAR-10."""
    real = os.environ.get("CFAMC_CIFAR10_JPEG")
    return ["--data", "imagefolder", "--data-dir", real] if real else ["--data", "cifar10", "--data-dir", tiny_data]


@pytest.mark.slow
def test_smoke_session_runs_every_stage_and_a_second_call_keeps_the_first(tmp_path, tiny_data):
    command = ["-m", "benchmarks.gpu_session", "--smoke", "--out", tmp_path / "s", "--export", tmp_path / "out",
               *smoke_data(tiny_data)]
    run_script(*command, timeout=900)
    record = json.loads((tmp_path / "s" / "session.json").read_text())
    stages = {s["stage"]: s for s in record["calls"][0]["stages"]}
    assert list(stages) == STAGES
    assert stages["cuda_tests"]["status"] == "skipped" and "CUDA" in stages["cuda_tests"]["reason"]
    for name in ("machine", "data", "probe", "train", "slf_pre", "slf_backbone", "autoattack"):
        assert stages[name]["status"] == "done", stages[name]
    assert stages["train"]["result"]["finished"] and "--resume auto" in (tmp_path / "s/logs/train.log").read_text()
    assert set(stages["slf_pre"]["result"]["pgd"]) == {"4/255", "8/255"}
    assert stages["slf_backbone"]["result"]["features"] == "backbone"
    assert "8/255" in stages["autoattack"]["result"]["autoattack"]
    md = (tmp_path / "s" / "session.md").read_text()
    assert "| CF-AMC-SSL, paper | 75.88 | 55.97 | 33.34 |" in md and "| cuda_tests |" in md
    exported = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(exported) <= 8 and {"session.json", "session.md", "metrics.jsonl", "slf_pre.json"} <= set(exported)
    first_eval = (tmp_path / "out" / "slf_pre.json").read_bytes()

    run_script(*command, timeout=900)  # the training has finished: every stage is found done
    record = json.loads((tmp_path / "s" / "session.json").read_text())
    assert [c["call"] for c in record["calls"]] == [1, 2]
    again = {s["stage"]: s for s in record["calls"][1]["stages"]}
    for name in ("probe", "train", "slf_pre"):
        assert again[name]["status"] == "done" and "reused_from_call" in again[name]["result"], again[name]
    assert (tmp_path / "out" / "slf_pre.json").read_bytes() == first_eval


def fake_stages(**real):
    """Stages that do nothing (an empty result), but the machine's, which is quick, and ``real``."""
    return {name: real.get(name) or (gpu_session.stage_machine if name == "machine" else lambda session, box: {})
            for name in STAGES}


def session_args(tmp_path, budget):
    return argparse.Namespace(out=str(tmp_path), budget=budget, smoke=True, export=None, argv=["--smoke"],
                              data="cifar10", data_dir=None, data_archive=None)


def test_a_stage_past_its_box_is_stopped_and_recorded_as_skipped(tmp_path, monkeypatch):
    def sleeper(session, box):
        gpu_session.run_command(["-c", "import time; time.sleep(60)"], session.log("sleeper"), box)

    stages = fake_stages(probe=sleeper)
    boxes = {**gpu_session.SMOKE.boxes, "probe": (6, 0)}
    monkeypatch.setattr(gpu_session, "STAGES", stages)
    scale = dataclasses.replace(gpu_session.SMOKE, boxes=boxes)
    started = time.monotonic()
    gpu_session.Session(session_args(tmp_path, 400), scale).run_all()
    assert time.monotonic() - started < 30
    record = json.loads((tmp_path / "session.json").read_text())
    probe = next(s for s in record["calls"][0]["stages"] if s["stage"] == "probe")
    assert probe["status"] == "skipped" and "past its time box of 6 s" in probe["reason"]
    assert all(s["status"] == "done" for s in record["calls"][0]["stages"] if s["stage"] != "probe")


def test_session_json_is_complete_after_every_stage(tmp_path, monkeypatch):
    seen = []

    def stage(name):
        def run(session, box):
            path = tmp_path / "session.json"
            record = json.loads(path.read_text()) if path.is_file() else {"calls": [{"stages": []}]}
            seen.append((name, [s["stage"] for s in record["calls"][-1]["stages"]]))
            if name == "slf_pre":
                raise RuntimeError("a failing stage")
            return gpu_session.stage_machine(session, box) if name == "machine" else {}
        return run

    monkeypatch.setattr(gpu_session, "STAGES", {name: stage(name) for name in STAGES})
    failed = gpu_session.Session(session_args(tmp_path, 1000), gpu_session.SMOKE).run_all()
    assert [name for name, _ in seen] == STAGES
    for k, (name, written) in enumerate(seen):
        assert written == STAGES[:k], name  # every earlier stage on disk before this one starts
    record = json.loads((tmp_path / "session.json").read_text())
    last = record["calls"][-1]
    assert [s["stage"] for s in last["stages"]] == STAGES
    assert all({"stage", "box_s", "seconds", "status"} <= set(s) for s in last["stages"])
    assert [s["stage"] for s in failed] == ["slf_pre"] and "a failing stage" in failed[0]["reason"]
    assert "| slf_pre |" in (tmp_path / "session.md").read_text()


def test_a_stage_without_time_left_is_skipped_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_session, "STAGES", fake_stages())
    gpu_session.Session(session_args(tmp_path, 1), gpu_session.SMOKE).run_all()
    stages = json.loads((tmp_path / "session.json").read_text())["calls"][0]["stages"]
    assert all(s["status"] == "skipped" and "left for it in the budget" in s["reason"] for s in stages)


def test_dry_run_prints_the_stages_their_boxes_and_the_gpu_estimate(capsys):
    gpu_session.main(["--dry-run", "--budget", "540"])
    out = capsys.readouterr().out
    assert all(name in out for name in STAGES) and "budget 540 s" in out
    assert "24.0 M passes" in out and "at the bf16 peak" in out


def test_the_dry_run_as_documented_needs_no_budget_and_says_it_has_none(capsys):
    gpu_session.main(["--dry-run"])
    out = capsys.readouterr().out
    assert out.startswith("budget not given (--budget SECONDS sets it)") and all(name in out for name in STAGES)


def test_without_data_it_says_what_to_pass(tmp_path):
    proc = run_script("-m", "benchmarks.gpu_session", "--out", tmp_path, "--budget", "60", "--data-archive",
                      tmp_path / "none.tar.gz",
                      check=False)
    assert proc.returncode == 2 and "--data-archive" in proc.stderr.strip().splitlines()[-1]
