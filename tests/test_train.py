import json
import math
import re

import pytest
import torch

from utils.core.checkpoint import load_checkpoint
from utils.core.files import machine
from utils.core.version import code_version
from utils.engine.config import entry_scripts, parse_config
from utils.engine.train import Trainer

from conftest import TINY, run_script, tiny_trainer

SCRIPTS = {key: script for key, (script, _) in entry_scripts().items()}

SCRIPT_DEFAULTS = {"epochs": 2, "batch_size": 16, "num_views": 4}


@pytest.mark.parametrize("method,regime", sorted(SCRIPTS))
def test_every_script_trains_end_to_end_and_leaves_a_loadable_checkpoint(script_run, method, regime):
    run, proc = script_run(method, regime)
    assert "epoch 2/2" in proc.stdout
    ckpt = load_checkpoint(run / "last.pt")
    assert (ckpt["method"], ckpt["regime"], ckpt["epoch"]) == (method, regime, 2)
    assert ckpt["config"]["width"] == 8 and ckpt["train_seconds"] > 0
    assert ckpt["train_machines"] == [machine("cpu")] and ckpt["train_code"] == [code_version()]
    assert ckpt["step"] == 2 * 3 * (2 if regime == "free" else 1)  # 48 images / 16 = 3 steps, replays counted
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and all(math.isfinite(r["loss"]) for r in records)
    config = json.loads((run / "config.json").read_text())
    assert config["method"] == method and config["subset"] == 48
    if regime == "free":
        assert len(ckpt["regime_state"]) == 1 and ckpt["regime_state"][0]["delta"].abs().max() > 0


def make_trainer(out, data, method, regime, *extra):
    return tiny_trainer(out, data, method, regime, *extra, defaults=SCRIPT_DEFAULTS)


def model_snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()})


@pytest.mark.parametrize("method", ["empssl", "simclr"])
def test_pgd_crafting_leaves_model_untouched_and_raises_loss(tmp_path, tiny_data, method):
    t = make_trainer(tmp_path, tiny_data, method, "pgd", "--pgd-steps", "3")
    t.train_step(t.images[:16])  # populate gradients and optimizer state
    views = t.augment(t.images[16:32])
    clean, target = t.regime.split(views)
    assert target.shape[0] == (3 * 16 if method == "empssl" else 16)
    before = model_snapshot(t.model)
    adv = t.regime.craft(clean, target)
    after = model_snapshot(t.model)
    for b, a in zip(before, after):
        assert all((b[k] is None and a[k] is None) or torch.equal(b[k], a[k]) for k in b)
    assert (adv - target).abs().max() <= 8 / 255 + 1e-6 and 0 <= adv.min() and adv.max() <= 1
    from attacks import frozen_bn_stats

    with torch.no_grad(), frozen_bn_stats(t.model):
        assert t.loss(torch.cat([clean, adv]))[0] > t.loss(torch.cat([clean, target]))[0]


@pytest.mark.parametrize("method", ["empssl", "simclr"])
def test_free_perturbation_persists_across_minibatches_in_ball_and_box(tmp_path, tiny_data, method):
    t = make_trainer(tmp_path, tiny_data, method, "free", "--replays", "2")
    adversary = t.regime.adversary
    assert adversary.delta.device == t.images.device
    assert adversary.delta.shape[0] == (3 * 16 if method == "empssl" else 16)
    t.train_step(t.images[:16])
    after_first = adversary.delta.clone()
    assert after_first.abs().max() > 0
    assert after_first.abs().max() <= 8 / 255 + 1e-6
    steps_before = t.step
    seen = []
    original = adversary.perturb
    adversary.perturb = lambda x: (seen.append((x.detach().clone(), original(x))), seen[-1][1])[1]
    t.train_step(t.images[16:32])
    # The first replay of the next minibatch starts from the carried perturbation, made valid for the new views.
    views, first_input = seen[0]
    torch.testing.assert_close(first_input.detach(), (views + after_first).clamp(0, 1), rtol=0, atol=1e-6)
    assert not torch.equal(first_input.detach(), views)
    assert t.step == steps_before + 2
    assert adversary.delta.abs().max() <= 8 / 255 + 1e-6


def test_parser_refuses_bad_values_in_one_line(tiny_data, capsys):
    proc = run_script("main_empssl_adv.py", "--bogus", check=False)  # as a user meets it
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    for args in (["--num-views", "1"], ["--eps", "-1"], ["--eps", "abc"], ["--batch-size", "0"],
                 ["--scale-min", "0.5", "--scale-max", "0.2"], ["--view-size", "0"], ["--stem", "vit"]):
        with pytest.raises(SystemExit) as exit_:
            parse_config("empssl", "pgd", None, args)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, (args, err)


def test_batch_larger_than_dataset_is_refused(tmp_path, tiny_data):
    proc = run_script("main_simclr.py", "--data-dir", tiny_data, "--subset", 8, "--out-dir", tmp_path, *TINY,
                      check=False)
    assert (proc.returncode == 2 and "larger than the 8 training images" in proc.stderr
            and "Traceback" not in proc.stderr)


def test_eps_accepts_fractions(tiny_data):
    cfg, _, _ = parse_config("empssl", "pgd", SCRIPT_DEFAULTS, ["--eps", "4/255", "--alpha", "0.002"])
    assert cfg["eps"] == pytest.approx(4 / 255) and cfg["alpha"] == 0.002


def test_help_lists_shared_flags():
    out = run_script("main_empssl_free_adv.py", "--help").stdout
    for flag in ("--data-dir", "--num-views", "--replays", "--eps", "--resume", "--compile", "--width", "--subset"):
        assert flag in out
    assert "(default: 10)" in out  # CF-AMC-SSL's 10 epochs
    assert re.search(r"--seed SEED\s+\(default: 0\)", out)  # a default of 0 is shown too
    assert re.search(r"--eps EPS\s+.*\(default: 8/255\)", out)  # eps as a fraction


@pytest.mark.slow
def test_compiled_free_run_trains_and_saves_plain_keys(tmp_path, tiny_data):
    # CF-AMC-SSL's regime, as the GPU session compiles it; without the kNN monitor, whose eval-mode forward would
    # be a second graph to compile on a machine with an empty compile cache.
    run_script("main_empssl_free_adv.py", "--data-dir", tiny_data, "--subset", 32, *TINY, "--epochs", 1,
               "--num-views", 2, "--replays", 2, "--knn-every", 0, "--compile", "--out-dir", tmp_path, timeout=600)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["config"]["compile"] and not any(k.startswith(("_orig_mod", "module")) for k in ckpt["model"])


def test_knn_monitor_rises_above_chance_and_leaves_training_unchanged(tmp_path, tiny_data):
    def run(out, *extra):
        argv = ["--data-dir", str(tiny_data), "--subset", "64", "--out-dir", str(out), *map(str, TINY), "--epochs", "3",
                "--num-views", "2", "--knn-train", "48", "--knn-test", "30", *extra]
        cfg, given, _ = parse_config("empssl", "free", {}, argv)
        trainer = Trainer(cfg, given)
        trainer.run()
        return trainer, [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    watched, records = run(tmp_path / "knn")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all(0 <= r["knn"] <= 100 for r in records) and records[-1]["knn"] >= 50  # ten classes: chance is 10
    plain, records = run(tmp_path / "plain", "--knn-every", "0")
    assert all("knn" not in r for r in records)
    for k, v in plain.model.state_dict().items():
        assert torch.equal(v, watched.model.state_dict()[k]), k


def test_z_dim_sizes_the_projector_and_evaluation_rebuilds_it(tmp_path, tiny_data):
    from utils.engine.config import resolve_saved
    from utils.engine.encoders import load_encoder

    argv = ["--data-dir", str(tiny_data), "--subset", "32", "--out-dir", str(tmp_path), *TINY, "--knn-every", "0",
            "--num-views", "2", "--z-dim", "24"]
    cfg, given, _ = parse_config("empssl", "free", None, argv)
    t = Trainer(cfg, given)
    assert t.model.projection[-1].out_features == 24 and t.model(t.augment(t.images[:4])).shape == (8, 24)
    t.checkpoint()
    encoder, meta = load_encoder(tmp_path / "last.pt", "empssl")
    assert encoder.projection[-1].out_features == 24 and meta["config"]["z_dim"] == 24
    saved = {k: v for k, v in cfg.items() if k != "z_dim"}  # a run saved before --z-dim: the method's size
    assert resolve_saved(saved)["z_dim"] == 1024 and parse_config("simclr", "free", None, [])[0]["z_dim"] == 128
