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
    accumulate: bool = False,
) -> torch.Tensor:
    """L-inf projected gradient ascent on ``loss_fn``.

    x: (B, ...) inputs in [0, 1]; ``loss_fn(x_adv)`` returns the scalar to maximise. Each step moves by
    ``alpha * sign(grad)`` and projects onto the eps-ball around x and onto [0, 1]. Gradients are taken with
    ``torch.autograd.grad`` with respect to the input only, so parameters' ``.grad`` are never touched, unless
    ``accumulate``: then each step calls ``backward()``, and every parameter that requires grad adds that step's
    gradient to its ``.grad`` (the step of the original CF-AMC-SSL code, whose optimizer applied the sum).
    ``start`` (x's shape), when given, is the first iterate instead of x or its uniform random start; it is
    not projected before the first step (TRADES starts at x + 0.001 N(0, 1) this way).
    Returns the detached x_adv, same shape as x. ``steps=0`` returns the (random) start.
    """
    x = x.detach()
    x_adv = x.clone() if start is None else start.detach().clone()
    if start is None and random_start and eps > 0:
        noise = torch.empty(x.shape, device=x.device, dtype=x.dtype)
        noise.uniform_(-eps, eps, generator=generator)
        x_adv = (x_adv + noise).clamp_(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        if accumulate:
            loss_fn(x_adv).backward()
            grad = x_adv.grad
        else:
            (grad,) = torch.autograd.grad(loss_fn(x_adv), x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = (x + (x_adv - x).clamp_(-eps, eps)).clamp_(0, 1)
    return x_adv.detach()
