import torch


class FreeAdversary:
    """The persistent perturbation of free adversarial training (Shafahi et al., 2019).

    One tensor ``delta`` of the perturbed input's shape lives on the training device for the whole run
    and carries over from minibatch to minibatch. Per replay::

        x_adv = adv.perturb(x)   # x + delta, delta made valid for this x and tracking its gradient
        loss(model(x_adv)).backward()   # one backward fills parameter grads and delta.grad together
        optimizer.step(); adv.step(x)   # ascend on delta: sign step, project to eps-ball and [0, 1]
    """

    def __init__(self, shape, eps: float, alpha: float, device=None):
        self.eps = float(eps)
        self.alpha = float(alpha)
        self.delta = torch.zeros(tuple(shape), device=device)

    def perturb(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape != self.delta.shape:
            raise ValueError(f"free perturbation has shape {tuple(self.delta.shape)}, input has {tuple(x.shape)}")
        x = x.detach()
        with torch.no_grad():
            self.delta.copy_((x + self.delta).clamp_(0, 1) - x)
        self.delta.requires_grad_(True)
        self.delta.grad = None
        return x + self.delta

    @torch.no_grad()
    def step(self, x: torch.Tensor) -> None:
        if self.delta.grad is None:
            raise RuntimeError("FreeAdversary.step() needs a backward pass through perturb()'s output first")
        x = x.detach()
        delta = (self.delta + self.alpha * self.delta.grad.sign()).clamp_(-self.eps, self.eps)
        self.delta = ((x + delta).clamp_(0, 1) - x).detach()

    def state_dict(self) -> dict:
        return {"delta": self.delta.detach().clone(), "eps": self.eps, "alpha": self.alpha}

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["delta"].shape) != tuple(self.delta.shape):
            raise ValueError(
                f"saved free perturbation has shape {tuple(state['delta'].shape)}, "
                f"this run needs {tuple(self.delta.shape)}"
            )
        self.delta = state["delta"].to(self.delta.device, self.delta.dtype).detach()
