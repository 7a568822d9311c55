import json

import pytest
import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from attacks import pgd_linf
from conftest import TINY, run_script
from models import build_encoder
from utils.evaluate import ViewAveragingClassifier, extract_features, fit_head, load_encoder, robust_accuracy
from utils.train import SCRIPTS


def separable_data(n, seed=0):
    """Eight classes, the corners of the RGB cube plus noise: any reasonable encoder separates them."""
    g = torch.Generator().manual_seed(seed)
    corners = torch.tensor([[(k >> c) & 1 for c in range(3)] for k in range(8)], dtype=torch.float32)
    colours = (0.2 + 0.6 * corners).view(8, 3, 1, 1)
    y = torch.randint(0, 8, (n,), generator=g)
    x = (colours[y] + 0.05 * torch.randn(n, 3, 32, 32, generator=g)).clamp(0, 1)
    return (x * 255).round().to(torch.uint8), y


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    enc = build_encoder("empssl", width=8, hidden_dim=64)
    x, y = separable_data(400)
    with torch.no_grad():  # BatchNorm statistics of the data, as a trained encoder would have
        enc.train()(x.float() / 255)
    enc.eval().requires_grad_(False)
    head = nn.Linear(64, 8)
    model = ViewAveragingClassifier(enc, head, "pre").eval()
    fit_head(head, extract_features(model, x, 100, torch.device("cpu")), y, 60, 0.1, 64, 0)
    head.requires_grad_(False)
    return model


def test_probe_on_separable_classes_is_accurate_and_pgd_accuracy_falls_with_eps(fitted):
    xt, yt = separable_data(200, seed=1)
    eps = [1 / 255, 8 / 255, 32 / 255]
    clean, robust, n = robust_accuracy(fitted, xt, yt, eps, 10, 64, torch.device("cpu"))
    assert n == 200
    assert clean >= 90
    assert clean >= robust[eps[0]] >= robust[eps[1]] >= robust[eps[2]]
    assert robust[eps[2]] < clean  # the attack bites


def test_zero_step_attack_without_start_gives_clean_accuracy(fitted):
    xt, yt = separable_data(50, seed=2)
    clean, robust, _ = robust_accuracy(fitted, xt, yt, [8 / 255], 0, 16, torch.device("cpu"), random_start=False)
    assert robust[8 / 255] == clean


def test_every_test_image_counted_once(fitted):
    xt, yt = separable_data(53, seed=3)
    clean, _, n = robust_accuracy(fitted, xt, yt, [], 0, 10, torch.device("cpu"))
    with torch.no_grad():
        direct = (fitted(xt.float() / 255).argmax(1) == yt).sum().item()
    assert n == 53 and clean == pytest.approx(100 * direct / 53)


def test_our_pgd_equals_torchattacks_on_encoder_and_head(fitted):
    xt, yt = separable_data(16, seed=4)
    x = xt.float() / 255
    ref = torchattacks.PGD(fitted, eps=8 / 255, alpha=2 / 255, steps=20, random_start=False)(x, yt)
    # torchattacks averages the loss over the batch; the evaluation sums it (same sign, less underflow).
    ours = pgd_linf(lambda xa: F.cross_entropy(fitted(xa), yt), x, 8 / 255, 2 / 255, 20, False)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_view_averaging_attack_holds_views_fixed(fitted):
    from augment import MultiViewAugment

    model = ViewAveragingClassifier(fitted.encoder, fitted.head, "pre", MultiViewAugment(4, "empssl", "crop"))
    x = torch.rand(5, 3, 32, 32)
    model.fix_views(5, x.device)
    a, b = model(x), model(x)
    torch.testing.assert_close(a, b)
    x.requires_grad_(True)
    model(x).sum().backward()
    assert x.grad.abs().sum() > 0  # the attack reaches the image through the views


@pytest.mark.parametrize("method,regime", sorted(SCRIPTS))
def test_evaluation_of_each_scripts_checkpoint(tmp_path, tiny_data, method, regime):
    views = ["--num-views", "2"] if method == "empssl" else []
    extra = {"pgd": ["--pgd-steps", "1"], "free": ["--replays", "1"], "standard": []}[regime]
    run_script(SCRIPTS[method, regime] + ".py", "--data-dir", tiny_data, "--subset", 32, *TINY, "--epochs", 1,
               "--out-dir", tmp_path, *views, *extra)
    evaluator = f"evaluate_{method}.py"
    options = {("empssl", "free"): ["--test-views", "2"],
               ("simclr", "pgd"): ["--probe", "adversarial", "--probe-pgd-steps", "1", "--features", "backbone"]}
    proc = run_script(evaluator, "--checkpoint", tmp_path / "last.pt", "--device", "cpu", "--subset-train", 32,
                      "--subset-test", 24, "--probe-epochs", 2, "--pgd-steps", 2, "--batch-size", 10,
                      *options.get((method, regime), []))
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["n_test"] == 24 and result["method"] == method and result["regime"] == regime
    assert set(result["pgd"]) == {"4/255", "8/255"} and all(0 <= v <= 100 for v in result["pgd"].values())
    assert result["settings"]["pgd_steps"] == 2 and result["seconds"] > 0
    probe = torch.load(tmp_path / "probe.pt", weights_only=True)
    kind, dim = ("backbone", 64) if (method, regime) == ("simclr", "pgd") else ("pre", 32)
    assert probe["feature_kind"] == kind and probe["head"]["weight"].shape == (10, dim)
    assert result["settings"]["probe"] == ("adversarial" if (method, regime) == ("simclr", "pgd") else "standard")
    assert "clean" in proc.stdout


def test_original_code_state_dict_with_module_prefix_loads(tmp_path):
    enc = build_encoder("empssl", width=8, hidden_dim=32)
    torch.save({f"module.{k}": v for k, v in enc.state_dict().items()}, tmp_path / "orig.pt")
    loaded, meta = load_encoder(tmp_path / "orig.pt", "empssl")
    assert meta["config"]["width"] == 8 and meta["config"]["hidden_dim"] == 32
    for k, v in enc.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    from utils.errors import UsageError

    with pytest.raises(UsageError, match="evaluate_empssl.py"):
        load_encoder(tmp_path / "orig.pt", "simclr")


def test_autoattack_and_eps_sweep_and_report(tmp_path, tiny_data):
    run_script("main_empssl_free_adv.py", "--data-dir", tiny_data, "--subset", 32, *TINY, "--epochs", 1,
               "--num-views", 2, "--replays", 1, "--out-dir", tmp_path / "run")
    run_script("evaluate_empssl.py", "--checkpoint", tmp_path / "run" / "last.pt", "--device", "cpu",
               "--subset-train", 32, "--subset-test", 6, "--probe-epochs", 1, "--pgd-steps", 2, "--eps-sweep",
               "--autoattack", "--autoattack-samples", 3, "--eps", "8/255", timeout=600)
    result = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert set(result["pgd"]) == {"0", "1/255", "2/255", "4/255", "8/255", "16/255"}
    assert result["pgd"]["0"] == result["clean"]
    assert result["autoattack_samples"] == 3 and 0 <= result["autoattack"]["8/255"] <= 100
    proc = run_script("-m", "utils.report", tmp_path, "--out", tmp_path / "table.md")
    table = (tmp_path / "table.md").read_text()
    assert "Crop-based EMP-SSL (2 crops, m=1 free, 1 epochs, width 8, 32 train images) = CF-AMC-SSL" in table
    assert "AutoAttack(8/255)" in table and f"{result['clean']:.2f}" in table
    assert (tmp_path / "robust_accuracy.png").stat().st_size > 1000 and "plot:" in proc.stdout


def test_report_without_results_is_one_line(tmp_path):
    proc = run_script("-m", "utils.report", tmp_path, check=False)
    assert proc.returncode == 2 and "no eval.json" in proc.stderr and "Traceback" not in proc.stderr
