import copy

import pytest
import torch

from utils.engine.optim import LARS, cosine_lr


def naive_lars_sgd(params, grads, bufs, lr, wd, eta, mom):
    """Per-parameter loop, float64: the formula of the design, one parameter at a time."""
    for i, (p, g) in enumerate(zip(params, grads)):
        g = g.clone()
        if p.ndim > 1:
            wn, gn = p.norm(), g.norm()
            rate = min(float(eta * wn / (gn + wd * wn)) / lr, 1.0) if wn > 0 and gn > 0 else 1.0
            g = (g + wd * p) * rate
        bufs[i] = g.clone() if bufs[i] is None else mom * bufs[i] + g
        p -= lr * (g + mom * bufs[i])


@pytest.mark.parametrize("lr", [0.3, 1e-4])
def test_lars_matches_per_parameter_formula(lr):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 3)).double()
    ref = copy.deepcopy(model)
    opt = LARS(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4, eta=0.005)
    bufs = [None] * len(list(ref.parameters()))
    for _ in range(4):
        x = torch.randn(8, 6, dtype=torch.float64)
        for m in (model, ref):
            m.zero_grad()
            m(x).pow(2).sum().backward()
        opt.step()
        with torch.no_grad():
            naive_lars_sgd(list(ref.parameters()), [p.grad for p in ref.parameters()], bufs, lr, 1e-4, 0.005, 0.9)
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_lars_excludes_1d_params_from_decay_and_scaling():
    bias = torch.nn.Parameter(torch.ones(3))
    opt = LARS([bias], lr=0.1, momentum=0.0, weight_decay=0.5)
    bias.grad = torch.full((3,), 2.0)
    opt.step()
    torch.testing.assert_close(bias.detach(), torch.full((3,), 1 - 0.1 * 2.0))


def test_cosine_schedule_ends_near_zero_and_never_rises():
    total = 3 * 50  # replays count: 50 minibatches x 3 replays
    lrs = [cosine_lr(s, total, 0.3) for s in range(total)]
    assert lrs[0] == 0.3
    assert lrs[-1] < 1e-3
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))
