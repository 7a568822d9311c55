"""SGD with Nesterov momentum under LARS trust-ratio scaling, and the cosine schedule."""
import math

import torch


class LARS(torch.optim.Optimizer):
    """SGD (momentum, Nesterov, weight decay) with LARS scaling, vectorised over parameters.

    For each parameter with more than one dimension, the update direction g + wd * w is multiplied by
    min(eta * |w| / (|g| + wd * |w|) / lr, 1) (the "clipping" variant, kept at 1 where |w| or |g| is 0).
    Biases and normalisation parameters (1-d) get neither weight decay nor scaling. Norms and rates stay on
    the device: no host synchronisation per parameter or per step.
    """

    def __init__(self, params, lr=0.3, momentum=0.9, weight_decay=1e-4, eta=0.005, nesterov=True):
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise ValueError("LARS needs lr >= 0, momentum >= 0, weight_decay >= 0 and eta > 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr, wd, mom = group["lr"], group["weight_decay"], group["momentum"]
            scaled = [p for p in params if p.ndim > 1]
            plain = [p for p in params if p.ndim <= 1]
            updates = [p.grad for p in plain]  # read only: every write below is out of place or on a buffer
            if scaled:
                grads = [p.grad for p in scaled]
                w_norm = torch.stack(torch._foreach_norm(scaled))
                g_norm = torch.stack(torch._foreach_norm(grads))
                ratio = group["eta"] * w_norm / (g_norm + wd * w_norm)
                ratio = torch.where((w_norm > 0) & (g_norm > 0), ratio / max(lr, 1e-12), torch.ones_like(ratio))
                ratio = ratio.clamp(max=1.0)
                directions = list(torch._foreach_add(grads, scaled, alpha=wd))
                torch._foreach_mul_(directions, list(ratio.unbind()))
                params = plain + scaled
                updates = updates + directions
            if mom:
                bufs = [self._momentum_buffer(p) for p in params]
                torch._foreach_mul_(bufs, mom)
                torch._foreach_add_(bufs, updates)
                if group["nesterov"]:
                    updates = torch._foreach_add(updates, bufs, alpha=mom)
                else:
                    updates = bufs
            torch._foreach_add_(params, updates, alpha=-lr)
        return loss

    def _momentum_buffer(self, p):
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        return state["momentum_buffer"]


def cosine_lr(step: int, total_steps: int, base_lr: float) -> float:
    """Cosine annealing from base_lr at step 0 towards 0 at step total_steps (no warm-up, never rises)."""
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
