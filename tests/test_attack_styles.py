"""The PGD regime's two attack styles against transcriptions of their steps written here, and the adversarial
regimes' ablation flags (eval-mode BatchNorm attack, views left clean, a clean branch, the attack-gain term)."""
import copy
import json

import pytest
import torch

from attacks import eval_bn, pgd_linf, pgd_linf_accumulating
from experiments.labels import PART_WORDS, regime_words
from losses import empssl_loss, nt_xent
from utils.core.errors import UsageError
from utils.engine.optim import LARS
from utils.engine.train import Trainer, parse_config

from conftest import tiny_trainer

EPS, ALPHA, STEPS, B = 8 / 255, 0.01, 3, 16


def make_trainer(out, data, method, regime, *extra):
    return tiny_trainer(out, data, method, regime, "--knn-every", "0", *extra)


def float64_views(t):
    """The trainer's model in float64 and a minibatch's views: PGD's sign steps flip where a gradient element is
    near zero, so float32 paths that differ in rounding alone (as CPUs do) could part; float64 paths agree."""
    t.model.double()
    return t.augment(t.images[:B]).double()


def objective(method, model, views):
    """The training loss written out: SimCLR forwards each view on its own, EMP-SSL all views at once."""
    if method == "simclr":
        return nt_xent(model(views[:B]), model(views[B:]), 0.07)
    return empssl_loss(model(views).view(3, B, -1), 200.0, 1.0, 0.2)[0]


def ascend(delta, x):
    with torch.no_grad():
        delta.data = (delta + ALPHA * delta.grad.sign()).clamp(-EPS, EPS)
        delta.data = (x + delta.data).clamp(0, 1) - x
    delta.grad.zero_()


def original_step(method, model, views):
    """The original code's main_{empssl,simclr}_adv.py step: gradients zeroed once, every attack step's
    ``backward()`` on the model in train mode (statistics moving), then the training step's, one LARS step."""
    opt = LARS(model.parameters(), 0.3, 0.9, 1e-4, 0.005)
    opt.zero_grad()
    x1, x = (views[:B], views[B:]) if method == "simclr" else (views[:0], views)
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(STEPS):
        if method == "simclr":
            z, z_adv = model(x), model(x + delta)  # view 2 against its own perturbed copy
            loss = nt_xent(z, z_adv, 0.07)
        else:
            loss = objective(method, model, x + delta)
        loss.backward()
        ascend(delta, x)
    objective(method, model, torch.cat([x1, x + delta])).backward()
    opt.step()


def isolated_step(method, model, views):
    """Textbook PGD-AT: the attack on a copy (its gradients and statistics thrown away) maximises the training
    loss; then one clean gradient of the training loss at the perturbed views and one LARS step."""
    opt = LARS(model.parameters(), 0.3, 0.9, 1e-4, 0.005)
    attacker = copy.deepcopy(model)
    x1, x = (views[:B], views[B:]) if method == "simclr" else (views[:0], views)
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(STEPS):
        objective(method, attacker, torch.cat([x1, x + delta])).backward()
        ascend(delta, x)
    opt.zero_grad()
    objective(method, model, torch.cat([x1, x + delta]).detach()).backward()
    opt.step()


def assert_states_close(a, b):
    for key in a:
        torch.testing.assert_close(a[key].float(), b[key].float(), rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("method", ["empssl", "simclr"])
@pytest.mark.parametrize("style", ["original", "isolated"])
def test_one_pgd_step_equals_its_transcription(tmp_path, tiny_data, method, style):
    t = make_trainer(tmp_path, tiny_data, method, "pgd", "--pgd-steps", str(STEPS), "--attack-style", style)
    views = float64_views(t)
    reference = copy.deepcopy(t.model)
    other = copy.deepcopy(t.model)
    t.regime.step(views)
    (original_step if style == "original" else isolated_step)(method, reference, views)
    (isolated_step if style == "original" else original_step)(method, other, views)
    # Parameters and BatchNorm buffers (running statistics, batch counters) after the LARS step.
    assert_states_close(t.model.state_dict(), reference.state_dict())
    moved = [k for k in reference.state_dict() if not torch.allclose(reference.state_dict()[k].float(),
                                                                      other.state_dict()[k].float())]
    assert any("running_mean" in k for k in moved) and any(k.endswith("weight") for k in moved)


def step_in_parts(model, views, accumulate, move, own_target):
    """SimCLR's PGD step with each part of the original step chosen: the attack steps' parameter gradients summed
    into the training step's or not; the attack's statistics kept or restored; the attack on view 2 against its
    own copy or on the training loss."""
    opt = LARS(model.parameters(), 0.3, 0.9, 1e-4, 0.005)
    opt.zero_grad()
    buffers = copy.deepcopy({k: v for k, v in model.named_buffers()})
    x1, x = views[:B], views[B:]
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(STEPS):
        if own_target:
            loss = nt_xent(model(x), model(x + delta), 0.07)
        else:
            loss = objective("simclr", model, torch.cat([x1, x + delta]))
        loss.backward()
        ascend(delta, x)
    if not move:
        model.load_state_dict({**model.state_dict(), **buffers})
    if not accumulate:
        opt.zero_grad()
    objective("simclr", model, torch.cat([x1, x + delta]).detach()).backward()
    opt.step()


@pytest.mark.parametrize("flags,parts", [
    (["--attack-style", "original", "--attack-grads", "discard"], (False, True, True)),
    (["--attack-style", "original", "--attack-stats", "restore"], (True, False, True)),
    (["--attack-style", "original", "--attack-target", "training"], (True, True, False)),
    (["--attack-style", "isolated", "--attack-target", "original"], (False, False, True)),
    (["--attack-style", "original"], (True, True, True)),
    (["--attack-style", "isolated"], (False, False, False)),
])
def test_each_part_of_the_original_step_switches_alone(tmp_path, tiny_data, flags, parts):
    t = make_trainer(tmp_path, tiny_data, "simclr", "pgd", "--pgd-steps", str(STEPS), *flags)
    views = float64_views(t)
    reference = copy.deepcopy(t.model)
    t.regime.step(views)
    step_in_parts(reference, views, *parts)
    assert_states_close(t.model.state_dict(), reference.state_dict())
    label = ", ".join(regime_words(t.cfg))
    assert all(PART_WORDS[value] in label for value in flags[3::2])  # the label names each departure


def isolated_step_on(model, views, attack_objective, training_objective):
    """The textbook PGD step transcribed with objectives of its own: the attack on a copy maximises
    ``attack_objective(net, x)``, then one LARS step on ``training_objective`` at the perturbed views."""
    attacker, opt = copy.deepcopy(model), LARS(model.parameters(), 0.3, 0.9, 1e-4, 0.005)
    delta = torch.zeros_like(views, requires_grad=True)
    for _ in range(STEPS):
        attack_objective(attacker, views + delta).backward()
        ascend(delta, views)
    opt.zero_grad()
    training_objective(model, (views + delta).detach()).backward()
    opt.step()


def test_an_invariance_only_attack_maximises_the_invariance_term_alone(tmp_path, tiny_data):
    from losses.invariance import invariance

    flags = ("--pgd-steps", str(STEPS), "--attack-style", "isolated", "--attack-tcr-coef", "0")
    t = make_trainer(tmp_path, tiny_data, "empssl", "pgd", *flags)
    views = float64_views(t)
    model = copy.deepcopy(t.model)
    t.regime.step(views)
    isolated_step_on(model, views, lambda net, x: -200.0 * invariance(net(x).view(3, B, -1)),
                     lambda net, x: objective("empssl", net, x))
    assert_states_close(t.model.state_dict(), model.state_dict())
    assert "attack TCR weight 0" in ", ".join(regime_words(t.cfg))
    with pytest.raises(UsageError, match="attack-tcr-coef"):
        make_trainer(tmp_path / "free", tiny_data, "empssl", "free", "--attack-tcr-coef", "0")


def test_ntxent_over_the_views_replaces_the_invariance_in_the_attack_and_the_training_step(tmp_path, tiny_data):
    from losses import multiview_nt_xent, total_coding_rate

    def ntxent_objective(net, x):
        z = net(x).view(3, B, -1)
        return multiview_nt_xent(z, 0.2) - 0.5 * total_coding_rate(z, 0.2).mean()

    flags = ("--pgd-steps", str(STEPS), "--attack-style", "isolated", "--invariance", "ntxent",
             "--ntxent-temperature", "0.2", "--tcr-coef", "0.5")
    t = make_trainer(tmp_path, tiny_data, "empssl", "pgd", *flags)
    views = float64_views(t)
    model = copy.deepcopy(t.model)
    t.regime.step(views)
    isolated_step_on(model, views, ntxent_objective, ntxent_objective)
    assert_states_close(t.model.state_dict(), model.state_dict())
    with pytest.raises(UsageError, match="--invariance ntxent"):
        make_trainer(tmp_path / "anchored", tiny_data, "empssl", "free", "--invariance", "ntxent", "--clean-views",
                     "1", "--anchor", "clean")


def test_the_paper_scripts_default_to_the_original_style_and_generic_runs_to_isolated():
    assert parse_config("empssl", "pgd", None, [])[0]["attack_style"] == "original"
    assert parse_config("simclr", "pgd", None, [])[0]["attack_style"] == "original"
    assert parse_config("empssl", "pgd", {}, [])[0]["attack_style"] == "isolated"


def test_accumulating_pgd_adds_every_steps_parameter_gradient():
    """loss(x) = sum(w * x): each step's gradient with respect to w is its iterate, so w.grad is their sum."""
    w = torch.nn.Parameter(torch.randn(4, 3))
    x = torch.rand(4, 3)
    iterates = []

    def loss_fn(x_adv):
        iterates.append(x_adv.detach().clone())
        return (w * x_adv).sum()

    out = pgd_linf_accumulating(loss_fn, x, EPS, ALPHA, 3, random_start=False)
    torch.testing.assert_close(w.grad, sum(iterates))
    torch.testing.assert_close(iterates[1], (x + ALPHA * w.sign()).clamp(0, 1))
    w.grad = None
    assert torch.equal(pgd_linf(loss_fn, x, EPS, ALPHA, 3, random_start=False), out) and w.grad is None


def test_an_eval_mode_batchnorm_attack_is_the_attack_on_the_eval_model(tmp_path, tiny_data):
    t = make_trainer(tmp_path, tiny_data, "empssl", "pgd", "--pgd-steps", str(STEPS), "--attack-bn", "eval")
    t.train_step(t.images[:B])  # running statistics away from their initial values
    t.model.double()
    views = t.augment(t.images[B:2 * B]).double()
    buffers = {k: v.clone() for k, v in t.model.state_dict().items()}
    adv = t.regime.craft(views[:0], views)
    frozen = copy.deepcopy(t.model).eval()
    expected = pgd_linf(lambda x: objective("empssl", frozen, x), views, EPS, ALPHA, STEPS, random_start=False)
    torch.testing.assert_close(adv, expected)
    assert all(torch.equal(buffers[k], v) for k, v in t.model.state_dict().items())
    assert all(m.training for m in t.model.modules())
    with eval_bn(t.model):
        assert not t.model.backbone.bn1.training and t.model.backbone.conv1.training


def test_clean_views_stay_unperturbed_and_leave_one_to_perturb(tmp_path, tiny_data):
    t = make_trainer(tmp_path, tiny_data, "empssl", "pgd", "--pgd-steps", "2", "--clean-views", "1")
    views = t.augment(t.images[:B])
    trained_on = []
    loss = t.loss
    t.loss = lambda v, net=None: (trained_on.append(v) if net is None else None, loss(v, net))[1]
    t.regime.step(views)
    assert torch.equal(trained_on[-1][:B], views[:B])  # view 1 of every image: as cut
    assert (trained_on[-1][B:] - views[B:]).abs().amax(dim=(1, 2, 3)).min() > 0  # every other view: perturbed
    with pytest.raises(UsageError, match="--clean-views 3 leaves no view"):
        make_trainer(tmp_path / "b", tiny_data, "empssl", "pgd", "--clean-views", "3")
    with pytest.raises(UsageError, match="--clean-apart"):
        make_trainer(tmp_path / "c", tiny_data, "empssl", "free", "--clean-apart")


def test_a_pgd_run_from_before_the_attack_styles_resumes_with_the_isolated_step(tmp_path, tiny_data):
    t = make_trainer(tmp_path / "run", tiny_data, "empssl", "pgd", "--pgd-steps", "1", "--attack-style", "isolated",
                     "--epochs", "1")
    t.run()
    path = tmp_path / "run" / "last.pt"
    state = torch.load(path, weights_only=True)
    del state["config"]["attack_style"]
    torch.save(state, path)
    for extra in ([], ["--attack-style", "isolated"]):
        cfg, given, _ = parse_config("empssl", "pgd", None, ["--data-dir", str(tiny_data), "--resume", str(path),
                                                             "--out-dir", str(tmp_path / "run"), *extra])
        assert Trainer(cfg, given).cfg["attack_style"] == "isolated"


@pytest.mark.parametrize("regime", ["pgd", "free"])
def test_the_clean_branch_and_the_attack_gain_are_the_losses_written_out(tmp_path, tiny_data, regime):
    extra = ["--pgd-steps", "2"] if regime == "pgd" else ["--replays", "1"]
    t = make_trainer(tmp_path, tiny_data, "simclr", regime, *extra, "--clean-weight", "0.5", "--attack-gain")
    views = t.augment(t.images[:B])
    noisy = (views[B:] + 0.02).clamp(0, 1)
    model = copy.deepcopy(t.model)
    t.regime.learner.views = views
    loss, terms = t.regime.learner.loss(torch.cat([views[:B], noisy]))
    adv, clean = objective("simclr", model, torch.cat([views[:B], noisy])), objective("simclr", model, views)
    torch.testing.assert_close(loss, adv + 0.5 * clean)
    torch.testing.assert_close(terms[-1], (adv - clean).detach())
    assert t.term_names() == ("loss", "attack_gain")


def test_a_pgd_run_logs_a_positive_attack_gain_and_resumes(tmp_path, tiny_data):
    argv = ["--pgd-steps", "2", "--attack-gain", "--clean-views", "1"]
    t = make_trainer(tmp_path / "run", tiny_data, "empssl", "pgd", *argv)
    t.run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["attack_gain"] > 0 for r in rows)
    again = make_trainer(tmp_path / "run", tiny_data, "empssl", "pgd", *argv, "--resume", "auto")
    assert again.epoch == 2 and again.cfg["clean_views"] == 1 and again.term_names()[-1] == "attack_gain"


def test_clean_apart_forwards_the_clean_views_and_the_perturbed_ones_each_with_its_own_statistics(tmp_path, tiny_data):
    t = make_trainer(tmp_path, tiny_data, "empssl", "free", "--clean-views", "1", "--clean-apart")
    views = t.augment(t.images[:B])
    with torch.no_grad():
        loss, _ = t.loss(views)
        z = torch.cat([t.model(views[:B]), t.model(views[B:])]).view(3, B, -1)
        joint = t.model(views).view(3, B, -1)
    torch.testing.assert_close(loss, empssl_loss(z, 200.0, 1.0, 0.2)[0])
    assert not torch.allclose(loss, empssl_loss(joint, 200.0, 1.0, 0.2)[0])


def test_the_clean_anchor_pulls_every_view_to_the_clean_views_and_needs_them(tmp_path, tiny_data):
    t = make_trainer(tmp_path, tiny_data, "empssl", "free", "--clean-views", "1", "--anchor", "clean")
    z = torch.randn(3, B, 8)
    torch.testing.assert_close(t.method.loss(z)[0], empssl_loss(z, 200.0, 1.0, 0.2, anchors=1)[0])
    with pytest.raises(UsageError, match="--anchor clean"):
        make_trainer(tmp_path / "b", tiny_data, "empssl", "free", "--anchor", "clean")


@pytest.mark.parametrize("regime,extra", [
    ("pgd", ["--pgd-steps", "2"]), ("pgd", ["--pgd-steps", "2", "--attack-gain"]),
    ("pgd", ["--pgd-steps", "2", "--clean-weight", "1", "--attack-gain"]),
    ("free", ["--replays", "2"]), ("free", ["--replays", "2", "--attack-gain"]),
])
def test_the_passes_a_step_is_counted_at_are_the_encoder_forwards_it_makes(tmp_path, tiny_data, regime, extra):
    t = make_trainer(tmp_path, tiny_data, "empssl", regime, *extra)
    rows = {"with_backward": 0, "forward_only": 0}

    def count(module, inputs, output):
        rows["with_backward" if torch.is_grad_enabled() else "forward_only"] += len(inputs[0])

    t.model.register_forward_hook(count)
    t.train_step(t.images[:B])
    passes = (rows["with_backward"] + rows["forward_only"] / 3) / (3 * B)
    assert passes == pytest.approx(type(t.regime).passes_per_batch(t.cfg))
