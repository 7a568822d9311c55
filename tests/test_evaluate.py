import hashlib
import json
import math

import pytest
import torch
import torch.nn.functional as F
import torchattacks
import torchvision.transforms.functional as TF
from pyautoattack import AutoAttack
from torch import nn

import utils.evaluation.evaluate as evaluate_module
import utils.evaluation.protocols as finetune_module
from attacks import autoattack_cascade, pgd_linf, trades_adversary, trades_loss
from utils.core.data import load_dataset, stratified_subset
from utils.core.errors import UsageError
from utils.core.files import machine
from utils.core.version import code_version
from utils.engine.blocks import augment_for, encoder_for
from utils.engine.config import entry_scripts
from utils.evaluation.evaluate import build_classifier, evaluate, load_encoder, parse_args, robust_accuracy
from utils.evaluation.protocols import Classifier, crop_flip, crop_flip_params, fit_aff, fit_alf, fit_slf
from utils.report import model_name, table

from conftest import TINY, run_script

SCRIPTS = {key: script for key, (script, _) in entry_scripts().items()}
CPU = torch.device("cpu")


def separable_data(n, seed=0):
    """Eight classes, the corners of the RGB cube plus noise: any reasonable encoder separates them."""
    g = torch.Generator().manual_seed(seed)
    corners = torch.tensor([[(k >> c) & 1 for c in range(3)] for k in range(8)], dtype=torch.float32)
    colours = (0.2 + 0.6 * corners).view(8, 3, 1, 1)
    y = torch.randint(0, 8, (n,), generator=g)
    x = (colours[y] + 0.05 * torch.randn(n, 3, 32, 32, generator=g)).clamp(0, 1)
    return (x * 255).round().to(torch.uint8), y


def protocol_args(protocol="slf", *flags):
    """The evaluator's parsed flags, benchmark defaults filled in, as the protocols receive them."""
    return parse_args("empssl", ["--checkpoint", "unused", "--protocol", protocol, *map(str, flags)])


def tiny_classifier(x, feature_kind="pre", classes=8, augment=None, views=None):
    """A width-8 encoder whose BatchNorm statistics are those of ``x`` (as a trained encoder's would be)."""
    torch.manual_seed(0)
    enc = encoder_for("empssl", width=8, hidden_dim=32)
    with torch.no_grad():
        enc.train()(x.float() / 255)
    enc.eval().requires_grad_(False)
    return Classifier(enc, nn.Linear(enc.feature_dim(feature_kind), classes), feature_kind, augment, views).eval()


@pytest.fixture(scope="module")
def fitted():
    x, y = separable_data(400)
    model = tiny_classifier(x)
    args = protocol_args("slf", "--no-train-augment", "--finetune-epochs", 60, "--finetune-lr", 0.1,
                         "--finetune-batch-size", 64, "--milestones", 100)
    fit_slf(model, x, y, args, CPU)
    return model.requires_grad_(False)


# Training augmentation, TRADES


def test_batched_crop_flip_equals_torchvision_per_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=g)
    top, left, flip = crop_flip_params(12, generator=g)
    out = crop_flip(x, top, left, flip)
    for i in range(12):
        ref = TF.crop(TF.pad(x[i], [4]), int(top[i]), int(left[i]), 32, 32)
        assert torch.equal(out[i], TF.hflip(ref) if flip[i] else ref)


def test_crop_flip_draws_cover_every_offset_and_flip_half_the_time():
    top, left, flip = crop_flip_params(4000, generator=torch.Generator().manual_seed(1))
    assert set(top.tolist()) == set(left.tolist()) == set(range(9))
    assert 0.45 < flip.float().mean() < 0.55


def test_trades_loss_equals_a_per_sample_loop():
    g = torch.Generator().manual_seed(0)
    logits, logits_adv = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    y = torch.tensor([0, 3, 1, 1, 2])
    total = 0.0
    for i in range(5):
        p = [math.exp(v) for v in logits[i].tolist()]
        q = [math.exp(v) for v in logits_adv[i].tolist()]
        p, q = [v / sum(p) for v in p], [v / sum(q) for v in q]
        total += -math.log(p[y[i]]) + 6.0 * sum(a * math.log(a / b) for a, b in zip(p, q))
    assert trades_loss(logits, logits_adv, y, 6.0).item() == pytest.approx(total / 5, rel=1e-5)


def test_trades_adversary_stays_in_the_ball_and_raises_the_kl():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    x = torch.rand(6, 3, 8, 8)
    x_adv = trades_adversary(model, x, 8 / 255, 2 / 255, 10)
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    p = F.softmax(model(x), 1)

    def kl(xa):
        return (p * (p.log() - F.log_softmax(model(xa), 1))).sum().item()

    assert kl(x_adv) > 10 * kl(x + 0.001 * torch.randn_like(x))


# The protocols


def test_protocol_defaults_are_the_benchmarks_and_flags_override_them():
    slf, aff = protocol_args("slf"), protocol_args("aff")
    assert (slf.finetune_lr, slf.finetune_batch_size, slf.milestones) == (0.01, 512, [10, 20])
    assert (aff.finetune_lr, aff.finetune_batch_size, aff.milestones) == (0.1, 128, [15, 20])
    for a in (slf, aff):
        assert (a.finetune_epochs, a.weight_decay, a.momentum, a.train_steps, a.trades_beta) == (25, 2e-4, 0.9, 10, 6)
        assert (a.train_eps, a.train_step_size, a.train_augment) == (8 / 255, 2 / 255, True)
    alf = protocol_args("alf", "--finetune-lr", 0.5, "--milestones", 3)
    assert (alf.finetune_lr, alf.finetune_batch_size, alf.milestones) == (0.5, 512, [3])


def test_alf_trains_the_head_and_leaves_the_encoder_bit_identical():
    x, y = separable_data(24)
    model = tiny_classifier(x)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head = model.head.weight.detach().clone()
    fit_alf(model, x, y, protocol_args("alf", "--finetune-epochs", 2, "--finetune-batch-size", 8,
                                       "--train-steps", 2), CPU)
    after = model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm buffers
    assert not model.encoder.training and not torch.equal(model.head.weight, head)


def test_aff_trains_the_encoder_up_to_the_features_only():
    x, y = separable_data(24)
    model = tiny_classifier(x, "backbone")
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    fit_aff(model, x, y, protocol_args("aff", "--features", "backbone", "--finetune-epochs", 1, "--finetune-batch-size",
                                       8, "--train-steps", 2), CPU)
    after = model.encoder.state_dict()
    assert not torch.equal(before["backbone.conv1.weight"], after["backbone.conv1.weight"])
    assert not torch.equal(before["backbone.bn1.running_mean"], after["backbone.bn1.running_mean"])
    unused = [k for k in before if not k.startswith("backbone.")]
    assert unused and all(torch.equal(before[k], after[k]) for k in unused)
    assert not model.training


def test_slf_on_separable_classes_is_accurate_and_pgd_accuracy_falls_with_eps(fitted):
    xt, yt = separable_data(64, seed=1)
    eps = [1 / 255, 8 / 255, 32 / 255]
    clean, robust, n = robust_accuracy(fitted, xt, yt, eps, 5, 64, CPU)
    assert n == 64
    assert clean >= 90
    assert clean >= robust[eps[0]] >= robust[eps[1]] >= robust[eps[2]]
    assert robust[eps[2]] < clean  # the attack bites


# Test-time measures


def test_zero_step_attack_without_start_gives_clean_accuracy():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    y = torch.tensor([0, 0, 1, 1])  # OnGrid is right on images 0, 1 as long as they stay on the uint8 grid
    _, robust, _ = robust_accuracy(OnGrid(), x, y, [8 / 255], 0, 4, CPU, random_start=False)
    assert robust[8 / 255] == 50
    _, robust, _ = robust_accuracy(OnGrid(), x, y, [8 / 255], 0, 4, CPU)  # the random start alone moves them
    assert robust[8 / 255] == 0


def test_every_test_image_counted_once(fitted):
    xt, yt = separable_data(53, seed=3)
    clean, _, n = robust_accuracy(fitted, xt, yt, [], 0, 10, CPU)
    with torch.no_grad():
        direct = (fitted(xt.float() / 255).argmax(1) == yt).sum().item()
    assert n == 53 and clean == pytest.approx(100 * direct / 53)


class OnGrid(nn.Module):
    """Class 0 for images on the uint8 grid (clean test images), class 1 for any other (perturbed) image."""

    def forward(self, x):
        off = (x * 255 - (x * 255).round()).abs().flatten(1).amax(1)
        on_grid = (off < 1e-3).float()
        return torch.stack([on_grid, 1 - on_grid], dim=1)


def test_robust_accuracy_counts_an_image_only_if_correct_clean_and_attacked():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    y = torch.tensor([0, 0, 1, 1])  # 0, 1: right clean, wrong perturbed; 2, 3: wrong clean, "right" perturbed
    clean, robust, _ = robust_accuracy(OnGrid(), x, y, [8 / 255], 0, 4, CPU)
    assert clean == 50 and robust[8 / 255] == 0


def test_our_pgd_equals_torchattacks_on_encoder_and_head(fitted):
    xt, yt = separable_data(16, seed=4)
    x = xt.float() / 255
    ref = torchattacks.PGD(fitted, eps=8 / 255, alpha=2 / 255, steps=20, random_start=False)(x, yt)
    # torchattacks averages the loss over the batch; the evaluation sums it (same sign, less underflow).
    ours = pgd_linf(lambda xa: F.cross_entropy(fitted(xa), yt), x, 8 / 255, 2 / 255, 20, False)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    with torch.no_grad():  # the evaluation's own attack (its summed loss) counts what torchattacks' images leave
        expected = 100 * ((fitted(x).argmax(1) == yt) & (fitted(ref).argmax(1) == yt)).float().mean().item()
    clean, robust, _ = robust_accuracy(fitted, xt, yt, [8 / 255], 20, 16, CPU, step_size=2 / 255, random_start=False)
    assert robust[8 / 255] == pytest.approx(expected) and robust[8 / 255] < clean


def test_test_views_classifier_is_one_function_of_the_image_in_any_batch():
    augment = augment_for(4, "empssl", "crop")
    views = augment.sample_params(1, "cpu", generator=torch.Generator().manual_seed(0))
    x = torch.rand(6, 3, 32, 32)
    model = tiny_classifier((x * 255).to(torch.uint8), augment=augment, views=views)
    with torch.no_grad():
        batch = model(x)
        shuffled = model(x[[5, 3, 0]])
        for i in range(6):
            torch.testing.assert_close(model(x[i: i + 1])[0], batch[i], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(shuffled, batch[[5, 3, 0]], rtol=1e-4, atol=1e-5)
    x.requires_grad_(True)
    model(x).sum().backward()
    assert x.grad.abs().sum() > 0  # the attack reaches the image through the views


# AutoAttack


def linear_model_and_data(n=40):
    """A linear classifier over 10 classes and images it classifies as their labels (100% clean)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)).eval().requires_grad_(False)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        y = model(x.float() / 255).argmax(1)
    return model, x, y


def test_autoattack_cascade_is_at_most_pgd_non_increasing_and_equals_one_plain_run(cheap_autoattack):
    model, x, y = linear_model_and_data()
    eps = 1 / 255
    _, pgd, _ = robust_accuracy(model, x, y, [eps], 20, 40, CPU)
    robust, accuracy, seconds, _ = autoattack_cascade(model, x.float() / 255, y, eps, 0, 16, CPU)
    assert (list(accuracy) == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
            and set(seconds) == set(accuracy) - {"clean"})
    values = list(accuracy.values())
    assert values[0] == 100 and all(a >= b for a, b in zip(values, values[1:]))
    assert 0 < values[-1] <= pgd[eps] < 100  # the test is only informative if both attacks break some, not all
    assert values[-1] == pytest.approx(100 * robust.float().mean().item())
    plain = AutoAttack(model, version="standard", norm="Linf", eps=eps, seed=0, device=CPU)
    _, predicted = plain.run_standard_evaluation(x.float() / 255, y, batch_size=16)
    assert torch.equal(predicted == y, robust)


def test_autoattack_cascade_runs_each_standard_attack_with_untouched_settings(monkeypatch):
    seen = []

    def record(self, x, y, *, batch_size=250, state_path=None):
        seen.append((list(self.attacks_to_run), self.version, self.norm, self.epsilon, self.seed, self.apgd.n_iter,
                     self.apgd_targeted.n_target_classes, self.fab.n_target_classes, self.square.n_queries, len(x)))
        keep = torch.arange(len(x)) % 2 == 0  # each attack breaks every other image it is given
        return x, torch.where(keep, y, (y + 1) % 10)

    monkeypatch.setattr(AutoAttack, "run_standard_evaluation", record)
    model, x, y = linear_model_and_data(16)
    robust, accuracy, _, _ = autoattack_cascade(model, x.float() / 255, y, 8 / 255, 3, 250, CPU)
    assert [s[0] for s in seen] == [["apgd-ce"], ["apgd-t"], ["fab-t"], ["square"]]
    assert all(s[1:9] == ("standard", "Linf", 8 / 255, 3, 100, 9, 9, 5000) for s in seen)
    assert [s[9] for s in seen] == [16, 8, 4, 2]  # only the images still robust are attacked
    assert list(accuracy.values()) == [100, 50, 25, 12.5, 6.25] and int(robust.sum()) == 1


# End to end


@pytest.mark.parametrize("method,regime", sorted(SCRIPTS))
def test_evaluation_of_each_scripts_checkpoint(script_run, tiny_data, capsys, method, regime):
    tmp_path = script_run(method, regime)[0]
    options = {("empssl", "free"): ["--test-views", "2"],
               ("empssl", "pgd"): ["--protocol", "aff", "--train-steps", "1"],
               ("simclr", "pgd"): ["--protocol", "alf", "--train-steps", "1", "--features", "backbone"]}
    checkpoint = tmp_path if (method, regime) == ("simclr", "standard") else tmp_path / "last.pt"  # a run directory
    evaluate(method, [*map(str, ["--checkpoint", checkpoint, "--device", "cpu", "--subset-train", 32, "--subset-test",
                                 24, "--finetune-epochs", 1, "--pgd-steps", 2, "--batch-size", 10]),
                      *options.get((method, regime), [])])
    protocol, kind, views_used = {("simclr", "pgd"): ("alf", "backbone", 1), ("empssl", "pgd"): ("aff", "pre", 1),
                                  ("empssl", "free"): ("slf", "pre", 2)}.get((method, regime), ("slf", "pre", 1))
    stem = tmp_path / f"eval-{protocol}-{kind}-v{views_used}-last"
    result = json.loads(stem.with_name(stem.name + ".json").read_text())
    assert result["n_test"] == 24 and result["method"] == method and result["regime"] == regime
    assert result["clean"] == pytest.approx(saved_accuracy(result, stem.with_name(stem.name + ".pt"), tiny_data),
                                            abs=0.01)
    assert set(result["pgd"]) == {"4/255", "8/255"} and all(v <= result["clean"] for v in result["pgd"].values())
    assert result["settings"]["pgd_steps"] == 2 and result["seconds"] > 0
    assert result["machine"] == machine("cpu") and result["train_machines"] == [machine("cpu")]
    assert result["code"] == code_version() and result["train_code"] == [code_version()]
    assert (result["protocol"], result["features"], result["test_views"]) == (protocol, kind, views_used)
    assert result["checkpoint"] == str(tmp_path / "last.pt") and "[" not in model_name(result)
    assert result["subsets"]["test"]["n"] == 24 and len(result["subsets"]["test"]["sha1"]) == 12
    fitted = torch.load(stem.with_name(stem.name + ".pt"), weights_only=True)
    dim = 64 if kind == "backbone" else 32
    assert fitted["feature_kind"] == kind and fitted["head"]["weight"].shape == (10, dim)
    assert ("encoder" in fitted) == (protocol == "aff")
    assert result["settings"]["protocol"] == protocol
    assert f"clean {result['clean']:.2f}" in capsys.readouterr().out


def saved_accuracy(result, fitted_path, data_dir, images=None):
    """Percent correct of the saved classifier (head, and the aff encoder) on the result's test images (or on
    ``images`` of them), computed here from the files alone."""
    settings = result["settings"]
    args = parse_args(result["method"], [f"--{k}={v}" for k, v in (("checkpoint", result["checkpoint"]),
                                                                   ("test-views", result["test_views"]),
                                                                   ("seed", settings["seed"]))])
    encoder, meta = load_encoder(result["checkpoint"], result["method"])
    fitted = torch.load(fitted_path, weights_only=True)
    if "encoder" in fitted:
        encoder.load_state_dict(fitted["encoder"])
    model = build_classifier(encoder, args, meta["config"], fitted["num_classes"], CPU)
    model.feature_kind = fitted["feature_kind"]
    model.head = nn.Linear(*reversed(fitted["head"]["weight"].shape))
    model.head.load_state_dict(fitted["head"])
    x, y = load_dataset("cifar10", data_dir, train=False)
    index = stratified_subset(y, result["n_test"], settings["subset_seed"])
    x, y = x[index], y[index]
    if images is not None:
        x, y = x[images], y[images]
    with torch.no_grad():
        return 100 * (model.eval()(x.float() / 255).argmax(1) == y).float().mean().item()


def test_original_code_state_dict_with_module_prefix_loads(tmp_path):
    enc = encoder_for("empssl", width=8, hidden_dim=32)
    torch.save({f"module.{k}": v for k, v in enc.state_dict().items()}, tmp_path / "orig.pt")
    loaded, meta = load_encoder(tmp_path / "orig.pt", "empssl")
    assert meta["config"]["width"] == 8 and meta["config"]["hidden_dim"] == 32
    for k, v in enc.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    with pytest.raises(UsageError, match="evaluate_empssl.py"):
        load_encoder(tmp_path / "orig.pt", "simclr")


def test_evaluations_with_different_protocols_leave_their_own_files(tmp_path, tiny_data):
    torch.save(encoder_for("simclr", width=8, hidden_dim=32).state_dict(), tmp_path / "orig.pt")
    common = ["--checkpoint", tmp_path / "orig.pt", "--data-dir", tiny_data, "--device", "cpu", "--subset-train", 20,
              "--subset-test", 10, "--finetune-epochs", 1, "--pgd-steps", 1, "--train-steps", 1, "--eps", "8/255"]
    evaluate("simclr", [*map(str, common), "--protocol", "slf"])
    before = (tmp_path / "eval-slf-pre-v1-orig.json").read_bytes(), (tmp_path / "eval-slf-pre-v1-orig.pt").read_bytes()
    evaluate("simclr", [*map(str, common), "--protocol", "aff", "--out", str(tmp_path)])
    names = sorted(p.name for p in tmp_path.glob("eval-*"))
    assert names == ["eval-aff-pre-v1-orig.json", "eval-aff-pre-v1-orig.pt",
                     "eval-slf-pre-v1-orig.json", "eval-slf-pre-v1-orig.pt"]
    assert ((tmp_path / "eval-slf-pre-v1-orig.json").read_bytes(),
            (tmp_path / "eval-slf-pre-v1-orig.pt").read_bytes()) == before
    before = before[0]
    # Another evaluation under the same name; PGD's random starts and AutoAttack's seeds are drawn per batch,
    # on the device, so --batch-size and --device count too.
    for flag, value, earlier in (("--subset-test", "20", "10"), ("--batch-size", "7", "500"),
                                 ("--device", "auto", "cpu")):
        with pytest.raises(UsageError, match=f"{flag} was {earlier}"):
            evaluate("simclr", [*map(str, common), "--protocol", "slf", flag, value])
    assert (tmp_path / "eval-slf-pre-v1-orig.json").read_bytes() == before
    again = evaluate("simclr", [*map(str, common), "--protocol", "slf"])  # the same evaluation: replaced
    kept = (tmp_path / "eval-slf-pre-v1-orig.json").read_bytes()
    assert json.loads(kept) == again and len(list(tmp_path.glob("eval-*"))) == 4
    torch.save(encoder_for("simclr", width=8, hidden_dim=32).state_dict(), tmp_path / "orig.pt")  # trained on
    with pytest.raises(UsageError, match="holds another evaluation"):  # same flags, another checkpoint state
        evaluate("simclr", [*map(str, common), "--protocol", "slf"])
    assert (tmp_path / "eval-slf-pre-v1-orig.json").read_bytes() == kept


def test_test_views_are_offered_to_every_method(tmp_path, tiny_data):
    torch.save(encoder_for("simclr", width=8, hidden_dim=32).state_dict(), tmp_path / "orig.pt")
    result = evaluate("simclr", ["--checkpoint", str(tmp_path / "orig.pt"), "--data-dir", str(tiny_data), "--device",
                                 "cpu", "--subset-train", "20", "--subset-test", "10", "--finetune-epochs", "1",
                                 "--pgd-steps", "1", "--eps", "8/255", "--test-views", "3", "--no-train-augment"])
    assert result["test_views"] == 3 and (tmp_path / "eval-slf-pre-v3-orig.json").is_file()


@pytest.mark.parametrize("flag", ["--eps", "--train-eps"])
def test_radius_above_one_is_a_one_line_error(flag):
    proc = run_script("evaluate_simclr.py", "--checkpoint", "x.pt", flag, "8", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "8/255" in lines[0] and "Traceback" not in proc.stderr


def test_autoattack_with_test_views_eps_sweep_and_report(tmp_path, tiny_data, cheap_autoattack):
    run_script("main_empssl_free_adv.py", "--data-dir", tiny_data, "--subset", 32, *TINY, "--epochs", 1,
               "--num-views", 2, "--replays", 1, "--out-dir", tmp_path / "run")
    result = evaluate("empssl", ["--checkpoint", str(tmp_path / "run" / "last.pt"), "--device", "cpu",
                                 "--subset-train", "32", "--subset-test", "12", "--finetune-epochs", "1",
                                 "--pgd-steps", "2", "--eps-sweep", "--autoattack", "--autoattack-samples", "10",
                                 "--eps", "8/255", "--test-views", "2"])
    assert result == json.loads((tmp_path / "run" / "eval-slf-pre-v2-last.json").read_text())
    assert set(result["pgd"]) == {"0", "1/255", "2/255", "4/255", "8/255", "16/255"}
    fitted = tmp_path / "run" / "eval-slf-pre-v2-last.pt"
    assert result["pgd"]["0"] == pytest.approx(saved_accuracy(result, fitted, tiny_data), abs=0.01)
    assert result["autoattack_samples"] == 10 and result["subsets"]["autoattack"]["n"] == 10
    breakdown = result["autoattack_breakdown"]["8/255"]
    assert list(breakdown) == ["clean", "apgd-ce", "apgd-t", "fab-t", "square", "seconds"]
    _, y = load_dataset("cifar10", tiny_data, train=False)
    sample = stratified_subset(y[stratified_subset(y, 12, 0)], 10, 0)  # AutoAttack's, within the test subset
    assert breakdown["clean"] == pytest.approx(saved_accuracy(result, fitted, tiny_data, sample), abs=0.01)
    proc = run_script("-m", "utils.report", tmp_path, "--out", tmp_path / "table.md")
    table = (tmp_path / "table.md").read_text()
    assert "Crop-based EMP-SSL (2 crops, m=1 free, 1 epoch, width 8, hidden 32, 32 train images, batch 16) |" in table
    assert "AutoAttack(8/255)" in table and f"{result['clean']:.2f}" in table
    assert "| slf | pre | 2 |" in table
    assert (tmp_path / "robust_accuracy.png").stat().st_size > 1000 and "plot:" in proc.stdout


def test_report_without_results_is_one_line(tmp_path):
    proc = run_script("-m", "utils.report", tmp_path, check=False)
    assert proc.returncode == 2 and "no eval.json" in proc.stderr and "Traceback" not in proc.stderr


def tiny_checkpoint(path, seed=0):
    torch.manual_seed(seed)
    torch.save(encoder_for("simclr", width=8, hidden_dim=32).state_dict(), path)
    return path


def quick_evaluation(checkpoint, tiny_data, *flags):
    return ["--checkpoint", str(checkpoint), "--data-dir", str(tiny_data), "--device", "cpu", "--subset-train", "20",
            "--subset-test", "10", "--finetune-epochs", "1", "--pgd-steps", "1", "--eps", "8/255", *map(str, flags)]


def test_two_evaluations_started_together_both_keep_their_results(tmp_path, tiny_data, monkeypatch):
    """A sweep over --seed into one --out: both pass the check at the start; the one that finishes second
    finds the name taken by then and keeps its own pair under the next name."""
    out = tmp_path / "out"
    argv = quick_evaluation(tiny_checkpoint(tmp_path / "orig.pt"), tiny_data, "--out", out)
    fit, second = evaluate_module.fit_and_test, {}

    def while_another_runs(model, data, args, device, progress):
        if not second:  # the first evaluation's fine-tuning: meanwhile the second runs to its end
            second["started"] = True
            evaluate("simclr", [*argv, "--seed", "1"])
            second["files"] = [(out / f"eval-slf-pre-v1-orig.{ext}").read_bytes() for ext in ("json", "pt")]
        return fit(model, data, args, device, progress)

    monkeypatch.setattr(evaluate_module, "fit_and_test", while_another_runs)
    first = evaluate("simclr", [*argv, "--seed", "0"])
    assert [(out / f"eval-slf-pre-v1-orig.{ext}").read_bytes() for ext in ("json", "pt")] == second["files"]
    assert json.loads((out / "eval-slf-pre-v1-orig.json").read_text())["settings"]["seed"] == 1
    assert json.loads((out / "eval-slf-pre-v1-orig-2.json").read_text()) == first and first["settings"]["seed"] == 0
    assert (out / "eval-slf-pre-v1-orig-2.pt").is_file() and not list(out.glob(".*"))


def test_checkpoint_identity_is_the_digest_of_the_bytes_evaluated(tmp_path, tiny_data, monkeypatch):
    checkpoint = tiny_checkpoint(tmp_path / "orig.pt")
    loaded = hashlib.sha1(checkpoint.read_bytes()).hexdigest()[:16]
    load_data = evaluate_module.load_data

    def replaced_meanwhile(args, cfg):  # a live run writes its next last.pt after the encoder was loaded
        tiny_checkpoint(checkpoint, seed=1)
        return load_data(args, cfg)

    monkeypatch.setattr(evaluate_module, "load_data", replaced_meanwhile)
    result = evaluate("simclr", quick_evaluation(checkpoint, tiny_data))
    assert result["checkpoint_identity"]["sha1"] == loaded != hashlib.sha1(checkpoint.read_bytes()).hexdigest()[:16]


def test_trades_adversary_starts_inside_the_image_box():
    x = torch.tensor([0.0, 1.0]).repeat(8, 3, 4, 1)  # pixels at both ends of [0, 1]
    start = trades_adversary(nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 2, 3)), x, 8 / 255, 2 / 255, 0)
    assert start.min() == 0 and start.max() == 1 and (start - x).abs().max() <= 0.01


def test_heads_start_at_zero_and_cifar100_linear_protocols_use_the_benchmarks_rate():
    x, _ = separable_data(8)
    args = protocol_args("slf")
    model = build_classifier(tiny_classifier(x).encoder, args, {"method": "empssl"}, 8, CPU)
    assert torch.count_nonzero(model.head.weight) == torch.count_nonzero(model.head.bias) == 0
    rates = {p: parse_args("empssl", ["--checkpoint", "x", "--protocol", p], data="cifar100").finetune_lr
             for p in ("slf", "alf", "aff")}
    assert rates == {"slf": 0.05, "alf": 0.05, "aff": 0.1} and protocol_args("slf").finetune_lr == 0.01
    assert parse_args("empssl", ["--checkpoint", "x", "--finetune-lr", "0.2"], data="cifar100").finetune_lr == 0.2


def fake_result(**settings):
    base = vars(parse_args("empssl", ["--checkpoint", "runs/r/last.pt"]))
    return {"method": "empssl", "regime": "free", "protocol": "slf", "features": "pre", "test_views": 1, "clean": 50.0,
            "pgd": {"4/255": 20.0, "8/255": 5.0}, "n_test": 100, "checkpoint": "runs/r/last.pt",
            "train_config": {"preset": "crop", "num_views": 16, "epochs": 10}, "settings": {**base, **settings}}


def test_report_rows_of_evaluations_that_differ_only_in_settings_differ():
    results = [fake_result(), fake_result(seed=1, subset_test=100),
               fake_result(random_start=False, pgd_step_size=1 / 255)]
    rows = table(results).splitlines()[2:]
    assert len(set(rows)) == 3
    assert "| - |" in rows[0] and "| --subset-test 100, --seed 1 |" in rows[1]
    assert "| --pgd-step-size 1/255, --no-random-start |" in rows[2]


def test_a_run_directory_is_labelled_as_its_last_pt_in_the_report():
    result = {**fake_result(checkpoint="runs/r"), "checkpoint": "runs/r",
              "checkpoint_identity": {"file": "/abs/runs/r/last.pt", "epoch": 10, "sha1": "0" * 16}}
    assert model_name(result) == model_name(fake_result()) and "[" not in model_name(result)


def test_aff_crafts_with_the_network_in_eval_mode_and_steps_in_train_mode(monkeypatch):
    x, y = separable_data(16)
    model = tiny_classifier(x, "backbone")
    modes, forward = [], Classifier.forward

    def recording(self, images):
        modes.append(self.encoder.backbone.bn1.training)
        return forward(self, images)

    monkeypatch.setattr(Classifier, "forward", recording)
    fit_aff(model, x, y, protocol_args("aff", "--features", "backbone", "--finetune-epochs", 1, "--finetune-batch-size",
                                       8, "--train-steps", 2), CPU)
    crafting, step = [False] * 3, [True] * 2  # the adversary's target and its 2 steps; the loss on x and on x_adv
    assert modes == (crafting + step) * 2 and not model.training and not model.encoder.backbone.bn1.training


def test_slf_cached_features_train_the_head_that_features_computed_on_the_fly_train(monkeypatch):
    x, y = separable_data(40)
    flags = ("--finetune-epochs", 2, "--finetune-batch-size", 16, "--batch-size", 7, "--finetune-lr", 0.1)
    cached, live = tiny_classifier(x), tiny_classifier(x)
    start = cached.head.weight.detach().clone()
    fit_slf(cached, x, y, protocol_args("slf", "--no-train-augment", *flags), CPU)
    # augmentation on, so features are computed per minibatch, but every crop is the image itself and draws nothing
    monkeypatch.setattr(finetune_module, "crop_flip_params", lambda n, generator=None: (None, None, None))
    monkeypatch.setattr(finetune_module, "crop_flip", lambda images, *_: images)
    fit_slf(live, x, y, protocol_args("slf", *flags), CPU)
    assert not torch.equal(cached.head.weight, start)
    torch.testing.assert_close(live.head.weight, cached.head.weight, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(live.head.bias, cached.head.bias, rtol=1e-4, atol=1e-6)


def test_an_evaluation_in_channels_last_measures_what_a_contiguous_one_measures(tmp_path, tiny_data, monkeypatch):
    """The layout is the probe's choice, recorded in the result; a rerun in the other layout is the same
    evaluation (it keeps the result's name) and measures the same accuracies."""
    argv = quick_evaluation(tiny_checkpoint(tmp_path / "orig.pt"), tiny_data, "--out", tmp_path / "out")
    results = {}
    for faster, slower in (("on", "off"), ("off", "on")):
        monkeypatch.setattr(evaluate_module, "layout_seconds", lambda model, x: {faster: 1.0, slower: 2.0})
        results[faster] = evaluate("simclr", argv)
        assert results[faster]["channels_last"] == faster
    assert not list((tmp_path / "out").glob("*-2.json"))
    assert (results["on"]["clean"], results["on"]["pgd"]) == (results["off"]["clean"], results["off"]["pgd"])


def test_the_evaluation_probe_times_an_attack_and_below_the_least_width_is_not_asked(tmp_path, tiny_data, monkeypatch):
    encoder, meta = load_encoder(tiny_checkpoint(tmp_path / "orig.pt"), "simclr")
    args = parse_args("simclr", ["--checkpoint", "-"])
    model = build_classifier(encoder, args, meta["config"], 10, CPU)
    probed = []

    def probe(model, x):
        probed.append(x)
        return {"off": 2.0, "on": 1.0}

    monkeypatch.setattr(evaluate_module, "layout_seconds", probe)
    assert evaluate_module.classifier_layout(model, args, meta["config"], CPU) == "on"
    assert probed[0].requires_grad and probed[0].shape[1:] == (3, 32, 32)  # a gradient to the images: an attack's
    narrow = {**meta["config"], "width": 4}
    assert evaluate_module.classifier_layout(model, args, narrow, CPU) == "off" and len(probed) == 1
    with pytest.raises(UsageError, match="--channels-last on needs --width 8 or more"):
        evaluate_module.classifier_layout(model, parse_args("simclr", ["--checkpoint", "-", "--channels-last", "on"]),
                                          narrow, CPU)
