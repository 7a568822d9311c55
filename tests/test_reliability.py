"""No trained work lost, bad input refused in one line, no code run from a checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import utils.core.files as run_module
import utils.engine.rundir as rundir_module
from utils.core.checkpoint import load_checkpoint, save_checkpoint
from utils.core.errors import UsageError
from utils.core.files import append_jsonl, machine, read_jsonl, write_json
from utils.evaluation.evaluate import evaluate

from conftest import ROOT, TINY, run_script, tiny_trainer


def one_line_error(proc, code=2):
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def usage_error(fn, *args) -> str:
    """The one-line UsageError that ``fn(*args)`` raises, which the entry scripts print as their only line."""
    with pytest.raises(UsageError) as raised:
        fn(*args)
    assert "\n" not in str(raised.value), str(raised.value)
    return str(raised.value)


@pytest.mark.slow
def test_resume_gives_bit_identical_weights(tmp_path, tiny_data):
    common = ["--data-dir", tiny_data, "--subset", 32, *TINY, "--num-views", 3, "--replays", 2]
    run_script("main_empssl_free_adv.py", *common, "--out-dir", tmp_path / "a", "--save-every", 1)
    first_run = {f.name: f.read_bytes() for f in (tmp_path / "a").iterdir()}
    run_script("main_empssl_free_adv.py", "--resume", tmp_path / "a" / "epoch_0001.pt", "--out-dir", tmp_path / "b")
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert b["epoch"] == 2 and b["step"] == a["step"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["regime_state"][0]["delta"], b["regime_state"][0]["delta"])
    assert {f.name: f.read_bytes() for f in (tmp_path / "a").iterdir()} == first_run  # the first run untouched
    metrics = [json.loads(line)["epoch"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert metrics == [1, 2]  # the branch carries the source's epoch-1 row


@pytest.mark.slow
def test_no_run_folder_is_overwritten(tmp_path, tiny_data):
    common = ["--data-dir", tiny_data, "--subset", 32, *TINY, "--epochs", 1]
    run_script("main_simclr.py", *common, "--out-dir", tmp_path, "--save-every", 1)
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    line = one_line_error(run_script("main_simclr.py", *common, "--out-dir", tmp_path, check=False))
    assert "already holds a run" in line and "--resume" in line
    line = one_line_error(run_script("main_simclr.py", "--resume", tmp_path / "epoch_0001.pt", "--out-dir", tmp_path,
                                     check=False))
    assert "--out-dir" in line and "epoch_0001.pt" in line
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == before


@pytest.mark.slow
def test_resume_refuses_changed_essential_flags_and_other_scripts(tmp_path, tiny_data):
    run_script("main_simclr.py", "--data-dir", tiny_data, "--subset", 32, *TINY, "--epochs", 1, "--out-dir", tmp_path)
    line = one_line_error(run_script("main_simclr.py", "--resume", tmp_path, "--batch-size", 8, check=False))
    assert "--batch-size 8" in line and "16" in line
    line = one_line_error(run_script("main_simclr.py", "--resume", tmp_path, "--lr", 0.1, check=False))
    assert "--lr 0.1" in line
    line = one_line_error(run_script("main_simclr_adv.py", "--resume", tmp_path, check=False))
    assert "main_simclr.py" in line


def test_resume_auto_starts_fresh_when_nothing_to_resume(tmp_path, tiny_data):
    run_script("main_simclr.py", "--data-dir", tiny_data, "--subset", 32, *TINY, "--epochs", 1, "--out-dir", tmp_path,
               "--resume", "auto")
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_sigterm_saves_a_checkpoint_and_resume_finishes(tmp_path, tiny_data):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["--data-dir", tiny_data, "--subset", 64, *TINY, "--epochs", 200, "--out-dir", tmp_path]
    proc = subprocess.Popen([sys.executable, str(ROOT / "main_simclr.py"), *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "--resume" in err and "Traceback" not in err
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert 1 <= ckpt["epoch"] < 200
    assert ckpt["step"] == ckpt["epoch"] * 4 + ckpt["batch_in_epoch"]


def test_nonfinite_loss_stops_with_step_and_terms(tmp_path, tiny_data):
    proc = run_script("main_empssl.py", "--data-dir", tiny_data, "--subset", 32, *TINY, "--num-views", 2,
                      "--lr", "1e30", "--lars-eta", "1e30", "--epochs", 5, "--out-dir", tmp_path, check=False)
    line = one_line_error(proc)
    assert "non-finite" in line and "step" in line and "invariance=" in line and "tcr=" in line


def test_kill_during_save_leaves_previous_checkpoint_loadable(tmp_path):
    """The writer is killed while a save is in progress: its bytes written, not yet renamed into place."""
    path, marker = tmp_path / "last.pt", tmp_path / "saving"
    save_checkpoint({"epoch": 0, "model": {"w": torch.zeros(3)}}, path)
    writer = (
        "import os, pathlib, sys, time, torch\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from utils.core import checkpoint\n"
        "def stalled_fsync(fd):\n"
        f"    pathlib.Path({str(marker)!r}).touch()\n"
        "    time.sleep(60)\n"
        "checkpoint.os.fsync = stalled_fsync\n"
        f"checkpoint.save_checkpoint({{'epoch': 1, 'model': {{'w': torch.ones(2_000_000)}}}}, {str(path)!r})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", writer])
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert marker.exists(), "the writer never reached the middle of its save"
    assert list(tmp_path.glob(".last.pt.*.tmp"))  # the half-finished save is there, beside the intact file
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 0 and torch.equal(ckpt["model"]["w"], torch.zeros(3))


def test_malicious_checkpoint_is_refused_and_its_code_does_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": Evil()}, path)
    with pytest.raises(UsageError, match="refusing to load"):
        load_checkpoint(path)
    assert not marker.exists()
    assert "refusing to load" in usage_error(evaluate, "empssl", ["--checkpoint", str(path), "--device", "cpu"])
    assert not marker.exists()


def test_truncated_and_foreign_checkpoints(tmp_path, tiny_data):
    run_script("main_simclr.py", "--data-dir", tiny_data, "--subset", 32, *TINY, "--epochs", 1, "--out-dir", tmp_path)
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pt").write_text("hello")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    one_line_error(run_script("evaluate_simclr.py", "--checkpoint", tmp_path / "cut.pt", "--device", "cpu",
                              check=False))  # as a user sees it: one line, no traceback
    for name in ("cut.pt", "text.pt", "list.pt", "missing.pt"):
        assert name in usage_error(evaluate, "simclr", ["--checkpoint", str(tmp_path / name), "--device", "cpu"])
    assert "evaluate_simclr.py" in usage_error(evaluate, "empssl", ["--checkpoint", str(tmp_path / "last.pt"),
                                                                    "--device", "cpu"])


@pytest.mark.parametrize("case,message", [("missing_dir", "no cifar10 data at"), ("empty_dir", "no image files under"),
                                          ("unwritable_out", "cannot write to output directory /proc/forbidden"),
                                          ("cuda", "no usable CUDA GPU")])
def test_bad_input_is_one_line(tmp_path, tiny_data, case, message):
    args = {
        "missing_dir": ["--data-dir", tmp_path / "nope", "--out-dir", tmp_path / "run"],
        "empty_dir": ["--data", "imagefolder", "--data-dir", tmp_path, "--out-dir", tmp_path / "run"],
        "unwritable_out": ["--data-dir", tiny_data, "--out-dir", "/proc/forbidden/run"],
        "cuda": ["--data-dir", tiny_data, "--device", "cuda", "--out-dir", tmp_path / "run"],
    }[case]
    if case == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if case == "empty_dir":
        (tmp_path / "train").mkdir()
    device = [] if case == "cuda" else ["--device", "cpu"]
    proc = run_script("main_empssl.py", *args, *device, "--width", "8", "--hidden-dim", "32", "--batch-size", "16",
                      "--subset", "32", check=False)  # the fault under test is the run's only one
    assert message in one_line_error(proc)


@pytest.mark.parametrize("stop_step,where", [(6, (1, 2)), (4, (1, 0))])  # mid-epoch 2; last batch of epoch 1
def test_resume_after_a_stop_gives_bit_identical_weights(tmp_path, tiny_data, stop_step, where):
    def trainer(out, *extra):
        return tiny_trainer(out, tiny_data, "empssl", "free", *extra, defaults={"epochs": 2, "batch_size": 16},
                            subset=64, views=2)

    handler_before = signal.getsignal(signal.SIGTERM)
    full = trainer(tmp_path / "full")
    full.run()
    interrupted = trainer(tmp_path / "cut")
    original_step = interrupted.train_step

    def step_then_signal(batch):  # a SIGTERM arriving during the given step (4 steps per epoch)
        out = original_step(batch)
        if interrupted.step == stop_step * interrupted.cfg["replays"]:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    interrupted.train_step = step_then_signal
    with pytest.raises(SystemExit) as stop:
        interrupted.run()
    assert stop.value.code == 128 + signal.SIGTERM
    saved = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert (saved["epoch"], saved["batch_in_epoch"]) == where
    save_checkpoint({**saved, "train_machines": ["the machine it began on"]}, tmp_path / "cut" / "last.pt")
    resumed = trainer(tmp_path / "cut", "--resume", "auto")
    assert resumed.run_dir.machines(resumed.device) == ["the machine it began on", machine("cpu")]
    resumed.run()
    records = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and all(r["loss"] != 0 for r in records)
    assert signal.getsignal(signal.SIGTERM) is handler_before  # handlers restored
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert torch.equal(full.regime.adversary.delta, resumed.regime.adversary.delta)


@pytest.mark.parametrize("case", ["corrupt", "wrong_size"])
def test_bad_image_folder_is_one_line(tmp_path, case):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "data" / "train" / "cat"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "good.png")
    if case == "corrupt":
        (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    else:
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "big.png")
    proc = run_script("main_empssl.py", "--data", "imagefolder", "--data-dir", tmp_path / "data", "--device", "cpu",
                      "--out-dir", tmp_path / "run", check=False)
    line = one_line_error(proc)
    assert ("broken.jpg" in line) if case == "corrupt" else ("64x64" in line and "big.png" in line)


def test_json_writers_never_share_a_temporary_file(tmp_path, monkeypatch):
    """Two processes writing one result name must not write into one temporary file."""
    renamed, replace = [], os.replace
    monkeypatch.setattr(run_module.os, "replace", lambda src, dst: (renamed.append(str(src)), replace(src, dst))[1])
    write_json(tmp_path / "r.json", {"a": 1})
    write_json(tmp_path / "r.json", {"a": 2})
    assert len(set(renamed)) == 2 and json.loads((tmp_path / "r.json").read_text()) == {"a": 2}


def test_an_exclusive_json_write_never_replaces_a_file(tmp_path):
    write_json(tmp_path / "r.json", {"a": 1}, exclusive=True)
    with pytest.raises(FileExistsError):
        write_json(tmp_path / "r.json", {"a": 2}, exclusive=True)
    assert (json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
            and [p.name for p in tmp_path.iterdir()] == ["r.json"])


def test_carry_metrics_interrupted_keeps_the_runs_rows(tmp_path, monkeypatch):
    rows = [{"epoch": e, "loss": e / 10} for e in (1, 2, 3)]
    for row in rows:
        append_jsonl(tmp_path / "metrics.jsonl", row)
    appended = []

    def append_then_stop(path, obj):  # whichever way the rows are written, the writer is stopped midway
        if appended:
            raise KeyboardInterrupt
        appended.append(obj)
        append_jsonl(path, obj)

    def stop(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(rundir_module, "append_jsonl", append_then_stop)
    monkeypatch.setattr(run_module.os, "replace", stop)
    with pytest.raises(KeyboardInterrupt):
        rundir_module.carry_metrics(tmp_path, tmp_path, 2)
    assert read_jsonl(tmp_path / "metrics.jsonl") == rows and [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_two_processes_never_train_into_one_folder(tmp_path, tiny_data):
    import fcntl

    from utils.engine.train import Trainer, parse_config

    out = tmp_path / "run"
    out.mkdir()
    argv = ["--data-dir", str(tiny_data), "--subset", "32", "--out-dir", str(out), *TINY, "--epochs", "1",
            "--knn-every", "0"]
    fd = os.open(out, os.O_RDONLY)  # another process's lock: a descriptor of its own
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(UsageError, match="another process is training in"):
            Trainer(*parse_config("simclr", "free", None, argv)[:2])
    finally:
        os.close(fd)
    Trainer(*parse_config("simclr", "free", None, argv)[:2]).run()
    assert (out / "last.pt").is_file()
    fd = os.open(out, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the run is done
    os.close(fd)
