import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# One thread: with two, any other busy process on a 2-core machine makes torch's CPU ops 10-100x slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """A test that runs a benchmark's main (which takes every core) leaves the next test on one thread."""
    yield
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cifar10_jpeg():
    """The CIFAR-10 JPEG copy unpacked (train/ and test/), from $CFAMC_CIFAR10_JPEG; skips when absent."""
    path = os.environ.get("CFAMC_CIFAR10_JPEG")
    if not path or not (Path(path) / "train").is_dir():
        pytest.skip("real data not available: set CFAMC_CIFAR10_JPEG to an unpacked CIFAR-10 image folder")
    return Path(path)


@pytest.fixture
def cheap_autoattack(monkeypatch):
    """AutoAttack's standard cascade and code path with far fewer iterations, targets and queries: seconds."""
    from pyautoattack import AutoAttack

    standard = AutoAttack._set_version

    def cheap(self, version="standard"):
        standard(self, version)
        self.apgd.n_iter = self.apgd_targeted.n_iter = self.fab.n_iter = 10
        self.apgd_targeted.n_target_classes = self.fab.n_target_classes = 3
        self.square.n_queries = 100

    monkeypatch.setattr(AutoAttack, "_set_version", cheap)


def write_cifar10(root: Path, n_train=64, n_test=40, seed=0):
    """A tiny CIFAR-10 in the original pickled layout: class k is a noisy image of colour k."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (10, 3))
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n):
        labels = rng.integers(0, 10, n)
        img = colours[labels][:, :, None, None] + rng.normal(0, 20, (n, 3, 32, 32))
        return {b"data": np.clip(img, 0, 255).astype(np.uint8).reshape(n, -1), b"labels": labels.tolist()}

    parts = [batch(n_train // 5 + (i < n_train % 5)) for i in range(5)]
    for i, part in enumerate(parts):
        with open(folder / f"data_batch_{i + 1}", "wb") as fh:
            pickle.dump(part, fh)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump(batch(n_test), fh)
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return write_cifar10(tmp_path_factory.mktemp("cifar"))


# The layout pinned: --channels-last auto would probe each run's speed, and two runs compared bit for bit must agree.
TINY = ["--width", "8", "--hidden-dim", "32", "--batch-size", "16", "--epochs", "2", "--device", "cpu",
        "--channels-last", "off"]


def tiny_trainer(out, data, method="empssl", regime="free", *extra, defaults=None, subset=32, views=3):
    """A ``Trainer`` of the TINY sizes on ``data``'s first ``subset`` images, writing to ``out``: EMP-SSL with
    ``views`` views (SimCLR keeps its 2); ``defaults`` stand in for the script's row (None: none), ``extra`` flags
    come last."""
    from utils.engine.train import Trainer, parse_config

    multiview = ["--num-views", str(views)] if method == "empssl" else []
    argv = ["--data-dir", str(data), "--subset", str(subset), "--out-dir", str(out), *TINY, *multiview,
            *map(str, extra)]
    cfg, given, _ = parse_config(method, regime, {} if defaults is None else defaults, argv)
    return Trainer(cfg, given)


@pytest.fixture(scope="session")
def script_run(tmp_path_factory, tiny_data):
    """``script_run(method, regime)`` -> (run folder, CompletedProcess): the entry script's toy run, trained by
    its command line once per test session (48 images, 2 epochs, 4 views, 2 replays or PGD steps)."""
    from utils.engine.config import entry_scripts

    scripts = {key: script for key, (script, _) in entry_scripts().items()}
    runs = {}

    def run(method, regime):
        if (method, regime) not in runs:
            out = tmp_path_factory.mktemp(f"{method}-{regime}") / "run"
            flags = {"--num-views": "4" if method == "empssl" else None, "--replays": "2" if regime == "free" else None,
                     "--pgd-steps": "2" if regime == "pgd" else None}
            proc = run_script(scripts[method, regime] + ".py", "--data-dir", tiny_data, "--subset", 48, "--out-dir",
                              out, *TINY, *[arg for item in flags.items() if item[1] for arg in item])
            runs[method, regime] = out, proc
        return runs[method, regime]

    return run


def run_script(script, *args, timeout=240, check=True):
    """Run a top-level script (or ``-m module``) as a user would; returns the CompletedProcess."""
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    target = [script] if script == "-m" else [str(ROOT / script)]
    proc = subprocess.run([sys.executable, *target, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} exited {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc
