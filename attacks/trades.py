"""TRADES (Zhang et al., 2019): the loss and the adversary that maximises its robustness term."""
from typing import Callable

import torch
import torch.nn.functional as F

from .pgd import pgd_linf


def trades_kl(logits: torch.Tensor, logits_adv: torch.Tensor, reduction: str = "batchmean") -> torch.Tensor:
    """KL(softmax(logits) || softmax(logits_adv)) per sample, reduced: logits, logits_adv (B, K) -> scalar.

    Gradient flows through both arguments, as in TRADES' loss."""
    return F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction=reduction)


def trades_loss(logits: torch.Tensor, logits_adv: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """CE(logits, labels) + beta * KL(softmax(logits) || softmax(logits_adv)), both averaged over the batch.

    logits: (B, K) on the clean images, logits_adv: (B, K) on their adversarial copies, labels: (B,) int64.
    """
    return F.cross_entropy(logits, labels) + beta * trades_kl(logits, logits_adv)


def trades_adversary(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: float, step_size: float,
                     steps: int) -> torch.Tensor:
    """x: (B, C, H, W) in [0, 1] -> x_adv of that shape, detached: PGD with sign steps of ``step_size`` on the
    KL term against the model's (fixed) prediction on x, from x + 0.001 N(0, 1) clipped to [0, 1] (an image
    even with no steps), each step projected to the L-inf ball of radius ``eps`` around x and to [0, 1]. ``model`` maps
    images to logits (B, K); run it in the mode the attack should see (TRADES crafts in eval mode)."""
    with torch.no_grad():
        logits = model(x)
    start = (x + 0.001 * torch.randn_like(x)).clamp(0, 1)
    return pgd_linf(lambda xa: trades_kl(logits, model(xa), reduction="sum"), x, eps, step_size, steps, start=start)
