"""torchrun / DDP on the CPU (gloo): the objectives over ranks equal the single-process objectives on the
global batch, and every script trains under torchrun with 2 processes."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
import torch.nn.functional as F

from conftest import ROOT, TINY
from utils.checkpoint import load_checkpoint
from utils.train import SCRIPTS, Objective

WORLD, V, B, D = 2, 3, 4, 16
CONFIGS = {
    "empssl": {"method": "empssl", "num_views": V, "inv_coef": 200.0, "tcr_coef": 1.0, "tcr_eps": 0.2},
    "simclr": {"method": "simclr", "num_views": 2, "temperature": 0.2},
}


def global_embeddings(method):
    views = CONFIGS[method]["num_views"]
    return F.normalize(torch.randn(views, WORLD * B, D, generator=torch.Generator().manual_seed(7)), dim=-1)


def worker(rank, method, init_file, out_dir):
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        z = global_embeddings(method)[:, rank * B:(rank + 1) * B].clone().requires_grad_(True)
        loss, _ = Objective(CONFIGS[method])(z.reshape(-1, D))
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": z.grad}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        tdist.destroy_process_group()


@pytest.mark.parametrize("method", ["empssl", "simclr"])
def test_objectives_over_ranks_equal_single_process(tmp_path, method):
    mp.spawn(worker, args=(method, str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    z = global_embeddings(method).requires_grad_(True)
    loss, _ = Objective(CONFIGS[method])(z.reshape(-1, D))
    loss.backward()
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
        # DDP averages parameter gradients over ranks: what reaches the parameters is grad / WORLD.
        torch.testing.assert_close(got["grad"] / WORLD, z.grad[:, rank * B:(rank + 1) * B], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method,regime", sorted(SCRIPTS))
def test_every_script_trains_under_torchrun(tmp_path, tiny_data, method, regime):
    views = ["--num-views", "2"] if method == "empssl" else []
    extra = {"pgd": ["--pgd-steps", "1"], "free": ["--replays", "2"], "standard": []}[regime]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(ROOT / f"{SCRIPTS[method, regime]}.py"), "--data-dir", str(tiny_data), "--subset", "32", *TINY,
           "--epochs", "1", "--out-dir", str(tmp_path), *views, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert (ckpt["method"], ckpt["regime"], ckpt["epoch"]) == (method, regime, 1)
    assert len(ckpt["rng"]) == 2  # one RNG state per rank, for an exact resume
    assert ckpt["step"] == 2 * (2 if regime == "free" else 1)  # 32 images / global batch 16
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1  # rank 0 alone writes
    if regime == "free":
        shard = 2 * 8 if method == "empssl" else 8  # each rank perturbs its own share of the batch
        assert [f["delta"].shape[0] for f in ckpt["free"]] == [shard, shard]
        assert not torch.equal(ckpt["free"][0]["delta"], ckpt["free"][1]["delta"])
    evaluator = f"evaluate_{method}.py"
    ev = subprocess.run([sys.executable, str(ROOT / evaluator), "--checkpoint", str(tmp_path / "last.pt"), "--device",
                         "cpu", "--subset-train", "16", "--subset-test", "8", "--probe-epochs", "1", "--pgd-steps", "1"],
                        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert json.loads((tmp_path / "eval.json").read_text())["n_test"] == 8
