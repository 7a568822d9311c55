"""What a training regime is. A new one (TRADES-style, AWP, another free variant) is a subclass in its own
file plus one line in ``utils/regimes/__init__.py`` (or a ``register`` call).

A regime turns one minibatch's views into optimizer steps through the learner (the trainer), which offers:
  learner.loss(views, net=None) -> (loss, terms)   the method's objective on (V*b, 3, H, W) view-major views;
                                                  ``net=learner.attack_net`` for an attack's forward passes
  learner.update(loss, zero_grad=True)           one optimizer step (schedule, zero_grad, backward, step);
                                                  ``zero_grad=False`` adds to gradients already there
  learner.zero_grad()                            clears the parameters' gradients
  learner.model, learner.attack_net              the bare encoder, and what attacks run (never DDP-wrapped)
  learner.net                                    what training steps run (DDP-wrapped across processes)
  learner.method                                 the method object (``utils.methods``)
  learner.clean_rows                             how many leading rows of ``views`` an adversary leaves clean
  learner.perturbed_shape, learner.device        the shape of the rows it perturbs, and their device
"""
import torch

from attacks import frozen_bn_stats

from ..cli import eps_label, nonneg_float, nonneg_int, radius


class Regime:
    name = ""
    display = ""  # "PGD adversarial training": the scripts' --help
    baseline = False  # the no-defence reference that a table of robust methods shows beside them
    variants: dict = {}  # name -> training flags: optional rows of utils.reproduce beside each seed row
    legacy: dict = {}  # settings added later -> the value that runs from before them trained with

    def __init__(self, cfg: dict, learner):
        self.cfg, self.learner = cfg, learner

    @classmethod
    def add_flags(cls, group) -> None:
        """Adds the regime's own settings to an argparse group."""

    @classmethod
    def label(cls, cfg: dict) -> str:
        """Short text for tables, e.g. '5-step PGD, original'."""
        return cls.name

    @classmethod
    def terms(cls, cfg: dict) -> tuple:
        """Names of the regime's own logged terms, which ``step`` appends after the method's."""
        return ()

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
    """What the adversarial regimes share: the radius and step, the views left clean, an optional clean branch
    in the loss, and the attack-gain diagnostic."""

    @classmethod
    def add_flags(cls, group):
        add_radius_flags(group)
        group.add_argument("--clean-views", type=nonneg_int, default=None,
                           help="leading views of each image the adversary leaves clean (default: the method's; "
                                "SimCLR 1, EMP-SSL 0)")
        group.add_argument("--clean-weight", type=nonneg_float, default=0.0,
                           help="add this weight times the loss on the unperturbed views, forwarded on their own "
                                "(a clean branch, as ACL's dual stream; one more forward and backward per step)")
        group.add_argument("--attack-gain", action="store_true",
                           help="log attack_gain: the loss at the perturbed views minus the loss at the clean ones "
                                "(one more forward per step without --clean-weight)")

    @classmethod
    def terms(cls, cfg):
        return ("attack_gain",) if cfg["attack_gain"] else ()

    @classmethod
    def departures(cls, cfg) -> list:
        """The ablation settings a run changed from its method's and the regime's defaults, as words for its label."""
        from ..methods import METHODS

        method = METHODS.get(cfg.get("method"))
        default_clean = method.clean_views if method else 0
        words = [f"{cfg['clean_views']} clean views"] if cfg.get("clean_views") not in (None, default_clean) else []
        words += [f"clean branch x{cfg['clean_weight']:g}"] if cfg.get("clean_weight") else []
        words += ["clean views forwarded apart"] if cfg.get("clean_apart") else []
        words += ["invariance to the clean views"] if cfg.get("anchor") == "clean" else []
        words += [f"attack TCR weight {cfg['attack_tcr_coef']:g}"] if cfg.get("attack_tcr_coef") is not None else []
        words += [f"eps {eps_label(cfg['eps'])}"] if "eps" in cfg and abs(cfg["eps"] - 8 / 255) > 1e-9 else []
        return words + ([f"step {eps_label(cfg['alpha'])}"] if "alpha" in cfg and abs(cfg["alpha"] - 0.01) > 1e-9 else [])

    @classmethod
    def clean_passes(cls, cfg) -> float:
        """The encoder passes ``objective`` adds at the clean views, in forward + backward units: the clean branch
        one, the attack-gain diagnostic alone a forward without backward (about a third: a backward costs about
        two forwards)."""
        if cfg["clean_weight"]:
            return 1
        return 1 / 3 if cfg.get("attack_gain") else 0

    def objective(self, views, perturbed):
        """(V*b, 3, H, W) clean views and the same views with the adversary's rows perturbed -> (loss, terms):
        the method's loss on ``perturbed``, plus the clean branch's when asked, and the attack's gain."""
        learner, weight, gain = self.learner, self.cfg["clean_weight"], self.cfg["attack_gain"]
        clean_loss = None
        if gain and not weight:  # before the training forward: restoring the statistics after it breaks its graph
            with torch.no_grad(), frozen_bn_stats(learner.model):
                clean_loss = learner.loss(views, learner.attack_net)[0]
        adv_loss, terms = learner.loss(perturbed)
        loss = adv_loss
        if weight:
            clean_loss = learner.loss(views)[0]
            loss = adv_loss + weight * clean_loss
        if gain:
            terms = [*terms, (adv_loss - clean_loss).detach().float()]
        return loss, terms


def add_radius_flags(group) -> None:
    group.add_argument("--eps", type=radius, default=8 / 255, help="L-inf radius, as 8/255 or 0.0314 (default: 8/255)")
    group.add_argument("--alpha", type=radius, default=0.01, help="ascent step size")
