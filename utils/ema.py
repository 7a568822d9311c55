"""An exponential moving average of the encoder's weights (``--ema-decay``): trained alongside the encoder at no cost
to its steps, saved in every checkpoint, evaluated with ``evaluate_*.py --weights ema``."""
import torch


class WeightAverage:
    """The average of every floating-point tensor of a model's state (parameters and BatchNorm's running
    statistics); integer buffers (BatchNorm's batch counts) are copied. Update t averages with weight
    ``min(decay, (1 + t) / (10 + t))``, so that a short run's average forgets the random initialisation (the rule of
    TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay, self.updates = decay, 0
        live = model.state_dict()  # detached views of the model's own storage: they follow its steps
        self.names = list(live)
        self.average = {name: t.detach().clone() for name, t in live.items()}
        floats = [name for name in self.names if live[name].is_floating_point()]
        self._floats = ([live[n] for n in floats], [self.average[n] for n in floats])
        self._counts = [(live[n], self.average[n]) for n in self.names if not live[n].is_floating_point()]

    def rate(self) -> float:
        """The weight of the average kept at the next update."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """After an optimizer step: average <- rate * average + (1 - rate) * model."""
        live, average = self._floats
        torch._foreach_lerp_(average, live, 1 - self.rate())
        for source, target in self._counts:
            target.copy_(source)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "weights": dict(self.average)}

    def load_state_dict(self, state: dict) -> None:
        if set(state["weights"]) != set(self.names):
            raise ValueError("the saved weight average holds other tensors than this model's state")
        with torch.no_grad():
            for name, tensor in state["weights"].items():
                self.average[name].copy_(tensor)
        self.decay, self.updates = state["decay"], state["updates"]
