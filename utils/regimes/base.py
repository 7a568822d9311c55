"""What a training regime is. A new one (TRADES-style, AWP, another free variant) is a subclass in its own
file plus one line in ``utils/regimes/__init__.py`` (or a ``register`` call).

A regime turns one minibatch's views into optimizer steps through the learner (the trainer), which offers:
  learner.loss(views, net=None) -> (loss, terms)   the method's objective on (V*b, 3, H, W) view-major views;
                                                  ``net=learner.model`` for an attack's forward passes
  learner.attack_loss(views, net=None) -> loss    the scalar a PGD attack maximises
  learner.update(loss, zero_grad=True)           one optimizer step (schedule, zero_grad, backward, step);
                                                  ``zero_grad=False`` adds to gradients already there
  learner.zero_grad()                            clears the parameters' gradients
  learner.model                                  the bare encoder: what attacks run, whose BatchNorm they set
  learner.net                                    what training steps run (DDP-wrapped across processes)
  learner.method                                 the method object (``utils.methods``)
  learner.clean_rows                             how many leading rows of ``views`` an adversary leaves clean
  learner.perturbed_shape, learner.device        the shape of the rows it perturbs, and their device
  learner.teacher                                a regime with ``needs_teacher``: the clean teacher encoder
"""
from utils.core.cli import nonneg_int, radius, step_size


class Regime:
    name = ""
    display = ""  # "PGD adversarial training": the scripts' --help
    needs_teacher = False  # True: --teacher names a standard run's checkpoint that the regime learns from
    minimises_method_loss = True  # False: the regime's step minimises a loss of its own (the method's switches idle)

    def __init__(self, cfg: dict, learner):
        self.cfg, self.learner = cfg, learner

    @classmethod
    def add_flags(cls, group) -> None:
        """Adds the regime's own settings to an argparse group."""

    @classmethod
    def terms(cls, cfg: dict) -> tuple:
        """Names of the regime's own logged terms, which ``step`` appends after the method's."""
        return ()

    @classmethod
    def logged_terms(cls, cfg: dict, method) -> tuple:
        """Names of the terms ``step`` returns: the method's, then the regime's own."""
        return (*method.term_names, *cls.terms(cfg))

    @classmethod
    def steps_per_batch(cls, cfg: dict) -> int:
        """Optimizer steps per minibatch: the cosine schedule counts them all."""
        return 1

    @classmethod
    def passes_per_batch(cls, cfg: dict) -> float:
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


class Adversarial(Regime):
    """What the adversarial regimes share: the radius and step, and the views left clean."""

    @classmethod
    def add_flags(cls, group):
        add_radius_flags(group)
        group.add_argument("--clean-views", type=nonneg_int, default=None,
                           help="leading views of each image the adversary leaves clean (default: the method's; "
                                "SimCLR 1, EMP-SSL 0)")


def add_radius_flags(group) -> None:
    group.add_argument("--eps", type=radius, default=8 / 255, help="L-inf radius, as 8/255 or 0.0314 (default: 8/255)")
    group.add_argument("--alpha", type=step_size, default=0.01,
                       help="ascent step size, or eps for a step of the radius (Shafahi et al.'s free training)")
