"""What a training regime is. A new one (TRADES-style, AWP, another free variant) is a subclass in its own
file plus one line in ``utils/regimes/__init__.py`` (or a ``register`` call).

A regime turns one minibatch's views into optimizer steps through the learner (the trainer), which offers:
  learner.loss(views, net=None) -> (loss, terms)   the method's objective on (V*b, 3, H, W) view-major views;
                                                  ``net=learner.attack_net`` for an attack's forward passes
  learner.update(loss)                           one optimizer step (schedule, zero_grad, backward, step)
  learner.model, learner.attack_net              the bare encoder, and what attacks run (never DDP-wrapped)
  learner.clean_rows                             how many leading rows of ``views`` an adversary leaves clean
  learner.perturbed_shape, learner.device        the shape of the rows it perturbs, and their device
"""
from ..cli import radius


class Regime:
    name = ""
    display = ""  # "PGD adversarial training": the scripts' --help
    baseline = False  # the no-defence reference that a table of robust methods shows beside them

    def __init__(self, cfg: dict, learner):
        self.cfg, self.learner = cfg, learner

    @classmethod
    def add_flags(cls, group) -> None:
        """Adds the regime's own settings to an argparse group."""

    @classmethod
    def label(cls, cfg: dict) -> str:
        """Short text for tables, e.g. '5-step PGD'."""
        return cls.name

    @classmethod
    def steps_per_batch(cls, cfg: dict) -> int:
        """Optimizer steps per minibatch: the cosine schedule counts them all."""
        return 1

    @classmethod
    def passes_per_batch(cls, cfg: dict) -> int:
        """Forward + backward passes of the encoder per minibatch (for FLOP counts)."""
        return 1

    def step(self, views):
        """(V*b, 3, H, W) views of one minibatch -> (loss, terms) of its last optimizer step."""
        raise NotImplementedError

    def split(self, views):
        """(rows left clean, rows an adversary perturbs)."""
        k = self.learner.clean_rows
        return views[:k], views[k:]

    def state_dict(self) -> dict:
        """What must survive a restart, per process (tensors on any device, plain values)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def add_radius_flags(group) -> None:
    group.add_argument("--eps", type=radius, default=8 / 255, help="L-inf radius, as 8/255 or 0.0314 (default: 8/255)")
    group.add_argument("--alpha", type=radius, default=0.01, help="ascent step size")
