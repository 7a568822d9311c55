"""torchrun / DDP on the CPU (gloo): the objectives over ranks equal the single-process objectives on the
global batch, and every script trains under torchrun with 2 processes."""
import json
import os
import subprocess
import sys
from contextlib import contextmanager

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
import torch.nn.functional as F

from utils.core import distributed as dist
from utils.core.checkpoint import load_checkpoint
from utils.engine.config import entry_scripts
from utils.evaluation.evaluate import evaluate
from utils.methods import METHODS

from conftest import ROOT, TINY, run_script

pytestmark = pytest.mark.slow  # every test here starts processes (torchrun or spawned ranks)

SCRIPTS = {key: script for key, (script, _) in entry_scripts().items()}

WORLD, V, B, D = 2, 3, 4, 16
CONFIGS = {
    "empssl": {"method": "empssl", "num_views": V, "inv_coef": 200.0, "tcr_coef": 1.0, "tcr_eps": 0.2,
               "per_view_forward": False},
    "simclr": {"method": "simclr", "num_views": 2, "temperature": 0.2, "per_view_forward": True},
}


def objective(method, z):
    """The engine's loss on (V*b, d) per-rank embeddings: gathered over ranks, then the method's loss."""
    cfg = CONFIGS[method]
    return METHODS.lookup(method)(cfg).loss(dist.gather_views(z.view(cfg["num_views"], -1, z.shape[-1])))


def global_embeddings(method):
    views = CONFIGS[method]["num_views"]
    return F.normalize(torch.randn(views, WORLD * B, D, generator=torch.Generator().manual_seed(7)), dim=-1)


@contextmanager
def gloo_group(rank, init_file):
    """A gloo group of WORLD processes; a rank that finished waits for the others before leaving it."""
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        yield
        tdist.barrier()  # leaving gloo while a peer still talks to it can abort a process at exit
    finally:
        tdist.destroy_process_group()


def worker(rank, method, init_file, out_dir):
    with gloo_group(rank, init_file):
        z = global_embeddings(method)[:, rank * B:(rank + 1) * B].clone().requires_grad_(True)
        loss, _ = objective(method, z.reshape(-1, D))
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": z.grad}, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.parametrize("method", ["empssl", "simclr"])
def test_objectives_over_ranks_equal_single_process(tmp_path, method):
    mp.spawn(worker, args=(method, str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    z = global_embeddings(method).requires_grad_(True)
    loss, _ = objective(method, z.reshape(-1, D))
    loss.backward()
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
        # DDP averages parameter gradients over ranks: what reaches the parameters is grad / WORLD.
        torch.testing.assert_close(got["grad"] / WORLD, z.grad[:, rank * B:(rank + 1) * B], rtol=1e-5, atol=1e-6)


def bn_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, D), torch.nn.BatchNorm1d(D), torch.nn.ReLU(), torch.nn.Linear(D, D))


def view_shards():
    """(2, WORLD*B, 6): SimCLR's two views of the global batch; rank r holds rows r*B:(r+1)*B of each."""
    return torch.randn(2, WORLD * B, 6, generator=torch.Generator().manual_seed(3))


def bn_buffers(net):
    bn = net[1]
    return [bn.running_mean, bn.running_var, bn.num_batches_tracked]


def per_view_worker(rank, init_file, out_dir):
    with gloo_group(rank, init_file):
        model = bn_net()
        with torch.no_grad():
            model[1].running_mean.add_(rank)  # the wrapper must start every rank from rank 0's buffers
        net = dist.wrap_model(model, torch.device("cpu"), sync_bn=False)
        views = view_shards()[:, rank * B:(rank + 1) * B].reshape(-1, 6)
        z = METHODS.lookup("simclr")(CONFIGS["simclr"]).embed(net, views, B)  # one forward per view
        loss, _ = objective("simclr", z)
        loss.backward()
        torch.save({"grads": [p.grad for p in model.parameters()], "buffers": bn_buffers(model)},
                   os.path.join(out_dir, f"rank{rank}.pt"))


def test_per_view_forwards_under_ddp_match_single_process(tmp_path):
    """Two forwards before one backward through the DDP-wrapped model (SimCLR's per-view forward) train as one
    process would with each rank's share forwarded view by view, and leave each rank the BatchNorm running
    statistics of the batches it normalised (rank 0's are what a checkpoint keeps). DDP's default, rank 0's
    buffers broadcast in place before every forward, fails the backward on torch 2.11 and overwrites rank 1's
    statistics on later versions."""
    mp.spawn(per_view_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    x, ref = view_shards(), bn_net()
    z = torch.stack([torch.cat([ref(x[v, r * B:(r + 1) * B]) for r in range(WORLD)]) for v in range(2)])
    objective("simclr", z.reshape(-1, D))[0].backward()
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for g, p in zip(got["grads"], ref.parameters()):
            torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-6)
        own = bn_net()
        with torch.no_grad():
            for v in range(2):
                own(x[v, rank * B:(rank + 1) * B])
        for b, want in zip(got["buffers"], bn_buffers(own)):
            torch.testing.assert_close(b, want, rtol=1e-5, atol=1e-6,
                                       msg=lambda m: f"rank {rank}'s BatchNorm buffers: {m}")


# Both methods' free regimes (each rank perturbs its share) and a PGD script: the regimes' and methods' paths under
# two ranks (the standard regime's step is theirs without the attack), each script's single-process run test_train's.
@pytest.mark.parametrize("method,regime", [("empssl", "free"), ("simclr", "free"), ("simclr", "pgd")])
def test_each_method_and_regime_trains_under_torchrun(tmp_path, tiny_data, method, regime):
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
        assert [f["delta"].shape[0] for f in ckpt["regime_state"]] == [shard, shard]
        assert not torch.equal(ckpt["regime_state"][0]["delta"], ckpt["regime_state"][1]["delta"])
    evaluate(method, ["--checkpoint", str(tmp_path / "last.pt"), "--device", "cpu", "--subset-train", "16",
                      "--subset-test", "8", "--finetune-epochs", "1", "--pgd-steps", "1"])
    assert json.loads((tmp_path / "eval-slf-pre-v1-last.json").read_text())["n_test"] == 8


def torchrun(script, *args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(ROOT / script),
           *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def test_a_one_process_run_resumed_under_two_is_refused(tmp_path, tiny_data):
    run_script("main_empssl_free_adv.py", "--data-dir", tiny_data, "--subset", 32, *TINY, "--num-views", 2,
               "--save-every", 1, "--out-dir", tmp_path)
    before = (tmp_path / "last.pt").read_bytes()
    proc = torchrun("main_empssl_free_adv.py", "--resume", tmp_path / "epoch_0001.pt", "--out-dir", tmp_path / "b")
    assert proc.returncode != 0 and not (tmp_path / "b" / "last.pt").exists()
    ours = [line for line in proc.stderr.splitlines() if "main_empssl_free_adv.py: error:" in line]
    assert ours and all("written by 1 process" in line and "--nproc_per_node 1" in line
                        for line in ours), proc.stderr[-3000:]
    assert (tmp_path / "last.pt").read_bytes() == before


def failing_save_worker(rank, init_file, data_dir, out_dir):
    import utils.core.distributed
    import utils.engine.rundir
    from utils.core.errors import UsageError
    from utils.engine.train import Trainer, parse_config

    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)

    def disk_full(state, path):
        raise UsageError(f"cannot write checkpoint {path}: No space left on device")

    utils.engine.rundir.save_checkpoint = disk_full
    argv = ["--data-dir", data_dir, "--subset", "32", *TINY, "--epochs", "1", "--out-dir", out_dir]
    cfg, given, _ = parse_config("simclr", "standard", {}, argv)
    try:
        Trainer(cfg, given).run()
        outcome = "finished"
    except UsageError as e:
        outcome = str(e)
    finally:
        utils.core.distributed.shutdown()
    with open(os.path.join(out_dir, f"outcome{rank}.txt"), "w") as fh:
        fh.write(outcome)


def test_a_failed_save_on_rank_0_stops_every_rank_with_its_message(tmp_path, tiny_data):
    mp.spawn(failing_save_worker, args=(str(tmp_path / "init"), str(tiny_data), str(tmp_path / "run")), nprocs=WORLD,
             join=True)  # a rank waiting forever at the next collective would hang here
    outcomes = [(tmp_path / "run" / f"outcome{r}.txt").read_text() for r in range(WORLD)]
    assert "No space left on device" in outcomes[0] and "rank 0 could not save" in outcomes[1], outcomes
