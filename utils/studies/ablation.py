"""The ablation switches of RESULTS.md's studies, in one layer that the methods and regimes do not branch on.

Each switch is a flag (in the ``ablations`` group of ``--help``) with a neutral value; a run that sets one
trains a subclass of its method or regime with that switch's mixin in front (``method_class``,
``regime_class``). With every switch neutral, a run trains the registered classes themselves.
"""
import argparse
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from attacks import eval_bn, frozen_bn_stats, pgd_linf, pgd_linf_accumulating
from losses import invariance, multiview_nt_xent, total_coding_rate
from utils.core.cli import nonneg_float, positive_float
from utils.core.errors import UsageError
from utils.methods import METHODS
from utils.regimes import REGIMES, Adversarial
from utils.regimes.pgd_original import OriginalPGD

TITLE = "ablations"
DESCRIPTION = "diagnostic switches of the studies in RESULTS.md; each is neutral by default"
# each part of the original code's PGD step: (its textbook value, its original value)
STYLE_PARTS = {"attack_grads": ("discard", "accumulate"), "attack_stats": ("restore", "move"),
               "attack_target": ("training", "original")}
PART_HELP = {"attack_grads": "the attack steps' parameter gradients: thrown away, or added to the training step's",
             "attack_stats": "BatchNorm running statistics after the attack: restored, or moved by its forwards",
             "attack_target": "what the attack maximises: the training loss, or the method's original_attack_views"}


def _adversarial(regime):
    return issubclass(REGIMES.lookup(regime), Adversarial)


def _own_loss(regime) -> bool:
    """Whether the regime minimises the method's loss on its views (not a loss of its own, as distillation's)."""
    return REGIMES.lookup(regime).minimises_method_loss


# Where each group of switches applies: (method, regime) -> why it does not, or "" where it does.
def _method_loss_switch(method, regime):
    return "" if _own_loss(regime) else f"the {regime} regime minimises a loss of its own, not the method's"


def _empssl_switch(method, regime):
    return _method_loss_switch(method, regime) or ("" if method == "empssl" else "it is an EMP-SSL switch")


def _clean_branch_switch(method, regime):
    if not _adversarial(regime):
        return "it needs an adversarial regime"
    return _method_loss_switch(method, regime)


def _pgd_switch(method, regime):
    return "" if regime == "pgd" else "it switches a part of PGD training"


def _clean_apart_flags(g):
    g.add_argument("--clean-apart", action="store_true",
                   help="forward the views an adversary leaves clean apart from the perturbed ones (BatchNorm "
                        "statistics per group; needs --clean-views)")


def _empssl_flags(g):
    g.add_argument("--anchor", choices=("all", "clean"), default="all",
                   help="what the invariance pulls each view to: the mean of all its image's views, or of the "
                        "views an adversary leaves clean (--clean-views)")
    g.add_argument("--invariance", choices=("cosine", "ntxent"), default="cosine",
                   help="the term that pulls an image's views together: EMP-SSL's cosine to their mean (weighted "
                        "--inv-coef), or NT-Xent over all the views (weight 1; each view's positives are the other "
                        "views of its image, as SimCLR's over 2)")
    g.add_argument("--ntxent-temperature", type=positive_float, default=0.07,
                   help="the temperature of --invariance ntxent (SimCLR's default)")
    g.add_argument("--attack-tcr-coef", type=nonneg_float, default=None,
                   help="weight of the TCR term in what a PGD attack maximises (default: --tcr-coef; 0: the "
                        "attack moves only the invariance, a per-image term)")


def _clean_branch_flags(g):
    g.add_argument("--clean-weight", type=nonneg_float, default=0.0,
                   help="add this weight times the loss on the unperturbed views, forwarded on their own (a "
                        "clean branch, as ACL's dual stream; one more forward and backward per step)")
    g.add_argument("--attack-gain", action="store_true",
                   help="log attack_gain: the loss at the perturbed views minus the loss at the clean ones (one "
                        "more forward per step without --clean-weight)")


def _pgd_flags(g):
    g.add_argument("--attack-bn", choices=("train", "eval"), default="train",
                   help="BatchNorm mode of the attack's forward passes")
    for key, (textbook, original) in STYLE_PARTS.items():
        g.add_argument("--" + key.replace("_", "-"), choices=(textbook, original), default=None,
                       help=f"{PART_HELP[key]} (default: the --attack-style's; isolated {textbook}, "
                            f"original {original})")


# (where the group applies, the flags it adds): a group that does not apply still knows its flags, to refuse them.
SWITCH_GROUPS = ((_method_loss_switch, _clean_apart_flags), (_empssl_switch, _empssl_flags),
                 (_clean_branch_switch, _clean_branch_flags), (_pgd_switch, _pgd_flags))


class _NotHere(argparse.Action):
    """A switch of a group that does not apply to this script: named and refused in one line, before any work."""

    def __init__(self, option_strings, dest, why="", **kw):
        super().__init__(option_strings, argparse.SUPPRESS, nargs="?", default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS)
        self.why = why

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} does not apply to {parser.prog}: {self.why}")


def add_flags(g, method: str, regime: str) -> None:
    """The switches that apply to (method, regime) in ``g``; the others refused by name (``_NotHere``)."""
    for where, flags in SWITCH_GROUPS:
        why = where(method, regime)
        if not why:
            flags(g)
            continue
        probe = argparse.ArgumentParser(add_help=False)
        flags(probe)
        for action in probe._actions:
            g.add_argument(*action.option_strings, action=_NotHere, why=why)


def complete(cfg: dict) -> None:
    """Fills the switches whose default is another setting: the attack's TCR weight, each part of the step."""
    if "attack_tcr_coef" in cfg and cfg["attack_tcr_coef"] is None:
        cfg["attack_tcr_coef"] = cfg["tcr_coef"]
    for key, values in STYLE_PARTS.items():
        if key in cfg and cfg[key] is None:
            cfg[key] = values[cfg["attack_style"] == "original"]


def parts_changed(cfg: dict) -> list:
    """The parts of the PGD step that differ from the ones of the run's --attack-style."""
    return [key for key, values in STYLE_PARTS.items()
            if key in cfg and cfg[key] != values[cfg["attack_style"] == "original"]]


# ----- the regimes' mixins --------------------------------------------------------------------------------------
class CleanTerms:
    """The clean branch (``--clean-weight``) and the attack-gain diagnostic (``--attack-gain``): the regime sees the
    learner through ``CleanBranch``, whose training loss knows the step's unperturbed views."""

    def __init__(self, cfg, learner):
        super().__init__(cfg, learner)
        self.learner = CleanBranch(learner, cfg["clean_weight"], cfg["attack_gain"])

    @classmethod
    def terms(cls, cfg):
        return (*super().terms(cfg), *(("attack_gain",) if cfg["attack_gain"] else ()))

    @classmethod
    def passes_per_batch(cls, cfg):
        """The clean branch adds a forward and backward per step; the gain alone a forward, a third of one."""
        extra = 1 if cfg["clean_weight"] else 1 / 3 if cfg["attack_gain"] else 0
        return super().passes_per_batch(cfg) + cls.steps_per_batch(cfg) * extra

    def step(self, views):
        self.learner.views = views
        return super().step(views)


class CleanBranch:
    """A learner whose training loss (``net`` not given) at the perturbed views adds ``weight`` times the loss at
    ``views``, the step's unperturbed views, and logs the gain of the one over the other; everything else is the
    wrapped learner's."""

    def __init__(self, learner, weight, gain):
        self._learner, self.weight, self.gain, self.views = learner, weight, gain, None

    def __getattr__(self, name):
        return getattr(self._learner, name)

    def loss(self, perturbed, net=None):
        learner = self._learner
        if net is not None:
            return learner.loss(perturbed, net)
        clean_loss = None
        # before the training forward: restoring the statistics after it would break its graph
        if self.gain and not self.weight:
            with torch.no_grad(), frozen_bn_stats(learner.model):
                clean_loss = learner.loss(self.views, learner.model)[0]
        adv_loss, terms = learner.loss(perturbed)
        loss = adv_loss
        if self.weight:
            clean_loss = learner.loss(self.views)[0]
            loss = adv_loss + self.weight * clean_loss
        if self.gain:
            terms = [*terms, (adv_loss - clean_loss).detach().float()]
        return loss, terms


class EvalBNAttack:
    """``--attack-bn eval``: the attack's forward passes with eval-mode BatchNorm, as a test-time attack sees it."""

    @contextmanager
    def attack_mode(self):
        with eval_bn(self.learner.model), super().attack_mode():
            yield


class PartedPGD(OriginalPGD):
    """The PGD step with each part of the original code's step chosen by its own flag: attack gradients summed or
    discarded, BatchNorm statistics moving or frozen, the original target or the textbook one."""

    def __init__(self, cfg, learner):
        super().__init__(cfg, learner)
        self.accumulate, self.move_stats, self.own_target = (cfg[key] == values[1]
                                                             for key, values in STYLE_PARTS.items())

    @contextmanager
    def attack_mode(self):
        with nullcontext() if self.move_stats else frozen_bn_stats(self.learner.model):
            yield

    def craft(self, clean, target):
        learner, cfg = self.learner, self.cfg
        # accumulated gradients must pass the wrapped (DDP) model to be reduced; discarded ones must not
        net = learner.net if self.accumulate else learner.model
        ascent = pgd_linf_accumulating if self.accumulate else pgd_linf
        attacked = learner.method.original_attack_views if self.own_target else lambda c, t, x: torch.cat([c, x])
        with self.attack_mode():
            return ascent(lambda x: learner.attack_loss(attacked(clean, target, x), net), target, cfg["eps"],
                          cfg["alpha"], cfg["pgd_steps"], cfg["random_start"])

    def step(self, views):
        if self.accumulate:
            self.learner.zero_grad()
        clean, target = self.split(views)
        loss, terms = self.learner.loss(torch.cat([clean, self.craft(clean, target)]))
        self.learner.update(loss, zero_grad=not self.accumulate)
        return loss, terms


# ----- the methods' mixins --------------------------------------------------------------------------------------
class CleanApart:
    """``--clean-apart``: the clean views and the perturbed ones in two forwards, each with its own statistics."""

    def embed(self, net, views, batch):
        k = self.cfg["clean_views"] * batch
        return torch.cat([super().embed(net, views[:k], batch), super().embed(net, views[k:], batch)])


class CleanAnchor:
    """``--anchor clean``: EMP-SSL's invariance pulls every view to the mean of the clean views."""

    @property
    def anchors(self):
        return self.cfg["clean_views"]


class NTXentInvariance:
    """``--invariance ntxent``: NT-Xent over all the views in place of EMP-SSL's invariance term (the cosine to the
    views' mean stays the logged ``invariance``, a monitor)."""

    def loss(self, z, tcr_coef=None):
        tcr_coef = self.cfg["tcr_coef"] if tcr_coef is None else tcr_coef
        tcr = total_coding_rate(z, self.cfg["tcr_eps"]).mean()
        loss = multiview_nt_xent(z, self.cfg["ntxent_temperature"]) - tcr_coef * tcr
        return loss, [invariance(z).detach(), tcr.detach()]


class AttackTCR:
    """``--attack-tcr-coef``: the PGD attack maximises EMP-SSL's loss with its own TCR weight."""

    def attack_loss(self, z):
        return self.loss(z, self.cfg["attack_tcr_coef"])[0]


@dataclass(frozen=True)
class Switch:
    mixin: type
    active: object  # cfg -> bool
    needs_clean_views: str = ""  # the flag, when it needs views left clean


def _attack_tcr_changed(cfg) -> bool:
    return cfg.get("attack_tcr_coef", cfg.get("tcr_coef")) != cfg.get("tcr_coef")


REGIME_SWITCHES = (
    Switch(CleanTerms, lambda cfg: bool(cfg.get("clean_weight") or cfg.get("attack_gain"))),
    Switch(EvalBNAttack, lambda cfg: cfg.get("attack_bn") == "eval"),
)
METHOD_SWITCHES = (
    Switch(CleanApart, lambda cfg: cfg.get("clean_apart", False), "--clean-apart"),
    Switch(CleanAnchor, lambda cfg: cfg.get("anchor") == "clean", "--anchor clean"),
    Switch(NTXentInvariance, lambda cfg: cfg.get("invariance") == "ntxent"),
    Switch(AttackTCR, _attack_tcr_changed),
)


def _with(base: type, switches, cfg) -> type:
    mixins = tuple(s.mixin for s in switches if s.active(cfg))
    return type(f"{base.__name__}With{''.join(m.__name__ for m in mixins)}", (*mixins, base), {}) if mixins else base


def regime_class(cfg: dict) -> type:
    """The run's regime: the registered one (by --attack-style for PGD), with the active switches in front."""
    base = REGIMES.lookup(cfg["regime"], cfg.get("attack_style", ""))
    if parts_changed(cfg):
        base = PartedPGD
    return _with(base, REGIME_SWITCHES, cfg)


def method_class(cfg: dict) -> type:
    """The run's method with the active switches in front; a switch that cannot apply is refused."""
    for switch in METHOD_SWITCHES:
        if switch.needs_clean_views and switch.active(cfg) and not cfg["clean_views"]:
            raise UsageError(f"{switch.needs_clean_views} needs views an adversary leaves clean: add --clean-views K "
                             f"(K >= 1) in an adversarial regime")
    if cfg.get("invariance") == "ntxent" and cfg.get("anchor") == "clean":
        raise UsageError("--anchor clean moves the cosine invariance's target; --invariance ntxent has none: drop one")
    if _attack_tcr_changed(cfg) and cfg["regime"] != "pgd":
        raise UsageError("--attack-tcr-coef weighs TCR in the PGD attack's objective; the other regimes have no "
                         "attack of their own: drop it or train with main_empssl_adv.py")
    return _with(METHODS.lookup(cfg["method"]), METHOD_SWITCHES, cfg)
