import copy

import pytest
import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from attacks import FreeAdversary, frozen_bn_stats, pgd_linf
from losses import empssl_loss
from utils.engine.blocks import encoder_for


class TinyClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = encoder_for("simclr", width=8, hidden_dim=32)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.encoder.features(x, "pre"))


def tiny_classifier(seed=0):
    torch.manual_seed(seed)
    return TinyClassifier().eval()


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, {
        n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
    }


def test_pgd_equals_torchattacks_without_random_start():
    model = tiny_classifier()
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    eps, alpha, steps = 8 / 255, 2 / 255, 7
    ref = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    ours = pgd_linf(lambda xa: F.cross_entropy(model(xa), y), x, eps, alpha, steps, random_start=False)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_pgd_raises_loss_stays_in_ball_and_box():
    model = tiny_classifier(1)
    x, y = torch.rand(16, 3, 32, 32), torch.randint(0, 10, (16,))
    eps = 8 / 255

    def loss(xa):
        return F.cross_entropy(model(xa), y)

    adv = pgd_linf(loss, x, eps, eps / 4, 10, random_start=True)
    assert (adv - x).abs().max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert loss(adv) > loss(x)
    assert not adv.requires_grad


def test_pgd_zero_steps_returns_start():
    model = tiny_classifier()
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(pgd_linf(lambda xa: model(xa).sum(), x, 0.1, 0.01, 0, random_start=False), x)
    start = pgd_linf(lambda xa: model(xa).sum(), x, 0.1, 0.01, 0, random_start=True)
    assert 0 < (start - x).abs().max() <= 0.1 + 1e-6


def test_pgd_in_training_mode_leaves_parameters_grads_and_bn_stats_untouched():
    torch.manual_seed(0)
    enc = encoder_for("empssl", width=8, hidden_dim=32).train()
    x = torch.rand(4 * 6, 3, 32, 32)
    enc(x).sum().backward()  # existing gradients must survive the attack unchanged
    before_state, before_grads = snapshot(enc)

    def loss(xa):
        return empssl_loss(enc(xa).view(4, 6, -1))[0]

    with frozen_bn_stats(enc):
        adv = pgd_linf(loss, x, 8 / 255, 0.01, 3, random_start=False)
    after_state, after_grads = snapshot(enc)
    assert all(torch.equal(before_state[k], after_state[k]) for k in before_state)
    assert all(torch.equal(before_grads[k], after_grads[k]) for k in before_grads)
    with torch.no_grad(), frozen_bn_stats(enc):
        assert loss(adv) > loss(x)


def test_frozen_bn_stats_uses_batch_statistics_in_training_and_running_ones_in_eval():
    bn = torch.nn.BatchNorm1d(3)
    bn.running_mean.fill_(5.0)
    x = torch.randn(64, 3) + 2
    with frozen_bn_stats(bn.train()):
        y_train = bn(x)
    assert torch.equal(bn.running_mean, torch.full((3,), 5.0)) and int(bn.num_batches_tracked) == 0
    torch.testing.assert_close(y_train, copy.deepcopy(bn).train()(x))
    with frozen_bn_stats(bn.eval()):
        y_eval = bn(x)
    torch.testing.assert_close(y_eval, (x - 5.0) / torch.sqrt(torch.tensor(1.0 + bn.eps)))


def test_free_adversary_persists_ascends_and_projects():
    torch.manual_seed(0)
    eps, alpha = 8 / 255, 0.01
    adv = FreeAdversary((4, 3, 8, 8), eps, alpha, device="cpu")
    w = torch.randn(4, 3, 8, 8)
    x = torch.rand(4, 3, 8, 8)
    for _ in range(5):
        xa = adv.perturb(x)
        (xa * w).sum().backward()
        adv.step(x)
    expected = torch.clamp(5 * alpha * w.sign(), -eps, eps)
    expected = (x + expected).clamp(0, 1) - x
    torch.testing.assert_close(adv.delta, expected)
    x2 = torch.rand(4, 3, 8, 8)
    xa2 = adv.perturb(x2)  # carried to the next minibatch, made valid for it
    torch.testing.assert_close(xa2.detach(), (x2 + expected).clamp(0, 1), rtol=0, atol=1e-6)


def test_free_adversary_refuses_wrong_shape_and_step_without_backward():
    adv = FreeAdversary((2, 3, 4, 4), 0.1, 0.01)
    with pytest.raises(ValueError, match="has shape"):
        adv.perturb(torch.rand(3, 3, 4, 4))
    adv.perturb(torch.rand(2, 3, 4, 4))
    with pytest.raises(RuntimeError, match="needs a backward"):
        adv.step(torch.rand(2, 3, 4, 4))


def test_free_adversary_state_roundtrip():
    adv = FreeAdversary((2, 3, 4, 4), 0.1, 0.01)
    adv.delta = torch.rand(2, 3, 4, 4) * 0.1
    other = FreeAdversary((2, 3, 4, 4), 0.1, 0.01)
    other.load_state_dict(adv.state_dict())
    assert torch.equal(other.delta, adv.delta)
