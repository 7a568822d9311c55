"""An exponential moving average of the encoder's weights (``--ema-decay``): trained alongside the encoder at no cost
to its steps, saved in every checkpoint, evaluated with ``evaluate_*.py --weights ema``."""
import torch

from utils.core.checkpoint import clean_state_dict


class WeightAverage:
    """The average of every floating-point tensor of a model's state (parameters and BatchNorm's running
    statistics); integer buffers (BatchNorm's batch counts) are copied. Update t averages with weight
    ``min(decay, (1 + t) / (10 + t))``, so that a short run's average forgets the random initialisation (the rule of
    TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``). Decay 0 keeps none: updates do nothing and the
    state is None, so that a run without an average handles it as one with."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay, self.updates = decay, 0
        self.active = decay > 0
        # detached views of the model's own storage: they follow its steps
        live = model.state_dict() if self.active else {}
        self.names = list(live)
        self.average = {name: t.detach().clone() for name, t in live.items()}
        floats = [name for name in self.names if live[name].is_floating_point()]
        self._floats = ([live[n] for n in floats], [self.average[n] for n in floats])
        self._counts = [(live[n], self.average[n]) for n in self.names if not live[n].is_floating_point()]

    def rate(self) -> float:
        """The weight of the average kept at the next update."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    def follow(self, optimizer: torch.optim.Optimizer) -> None:
        """Update after every step of ``optimizer``, whoever calls it."""
        if self.active:
            optimizer.register_step_post_hook(lambda *_: self.update())

    @torch.no_grad()
    def update(self) -> None:
        """After an optimizer step: average <- rate * average + (1 - rate) * model."""
        live, average = self._floats
        torch._foreach_lerp_(average, live, 1 - self.rate())
        for source, target in self._counts:
            target.copy_(source)
        self.updates += 1

    def state_dict(self) -> dict | None:
        if not self.active:
            return None
        return {"decay": self.decay, "updates": self.updates, "weights": clean_state_dict(self.average)}

    def load_state_dict(self, state: dict | None) -> None:
        if not self.active:
            return
        if state is None or set(state["weights"]) != set(self.names):
            raise ValueError("the saved weight average holds other tensors than this model's state")
        with torch.no_grad():
            for name, tensor in state["weights"].items():
                self.average[name].copy_(tensor)
        self.decay, self.updates = state["decay"], state["updates"]
