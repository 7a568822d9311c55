from typing import Callable

import torch


def pgd_linf(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """L-inf projected gradient ascent on ``loss_fn`` (Madry et al., 2018).

    x: (B, ...) inputs in [0, 1]; ``loss_fn(x_adv)`` returns the scalar to maximise. Each step moves by
    ``alpha * sign(grad)`` and projects onto the eps-ball around x and onto [0, 1]. Gradients are taken with
    ``torch.autograd.grad`` with respect to the input only, so parameters' ``.grad`` are never touched.
    ``start`` (x's shape), when given, is the first iterate instead of x or its uniform random start; it is
    not projected before the first step (TRADES starts at x + 0.001 N(0, 1) this way).
    Returns the detached x_adv, same shape as x. ``steps=0`` returns the (random) start.
    """
    x = x.detach()
    x_adv = first_iterate(x, eps, random_start, generator, start)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(x_adv), x_adv)
        x_adv = ascend(x, x_adv, grad, eps, alpha)
    return x_adv.detach()


def pgd_linf_accumulating(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The original CF-AMC-SSL code's ascent: ``pgd_linf``'s iterates, but each step calls ``backward()``, so
    every parameter that requires grad adds that step's gradient to its ``.grad`` (the original code's optimizer
    applied the sum with the training step's). x: (B, ...) in [0, 1] -> the detached x_adv, same shape."""
    x = x.detach()
    x_adv = first_iterate(x, eps, random_start, generator, None)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss_fn(x_adv).backward()
        x_adv = ascend(x, x_adv, x_adv.grad, eps, alpha)
    return x_adv.detach()


def first_iterate(x, eps, random_start, generator, start) -> torch.Tensor:
    """``start``, else x, moved by uniform noise in the eps-ball when ``random_start`` (clamped to [0, 1])."""
    x_adv = x.clone() if start is None else start.detach().clone()
    if start is None and random_start and eps > 0:
        noise = torch.empty(x.shape, device=x.device, dtype=x.dtype)
        noise.uniform_(-eps, eps, generator=generator)
        x_adv = (x_adv + noise).clamp_(0, 1)
    return x_adv


def ascend(x, x_adv, grad, eps, alpha) -> torch.Tensor:
    """One signed step of size alpha, projected onto the eps-ball around x and onto [0, 1]."""
    x_adv = x_adv.detach() + alpha * grad.sign()
    return (x + (x_adv - x).clamp_(-eps, eps)).clamp_(0, 1)
