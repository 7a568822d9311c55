from contextlib import nullcontext

import torch

from attacks import eval_bn, frozen_bn_stats, pgd_linf

from ..cli import nonneg_int
from .base import Adversarial


class PGD(Adversarial):
    """K steps of L-inf PGD on the self-supervised loss, then one training step on the perturbed views.

    Two attack styles, because the seed's numbers came from the first and the field expects the second:
      original  the original CF-AMC-SSL code's step: every attack step calls ``backward()``, so the optimizer
                applies the sum of the attack steps' parameter gradients (the first at the clean views) and the
                training step's; the attack's forward passes move BatchNorm running statistics; it maximises
                the method's ``original_attack_views`` (SimCLR: view 2 against its own perturbed copy).
      isolated  textbook PGD-AT: gradients go to the perturbation only, BatchNorm running statistics are
                restored afterwards, and the attack maximises the training loss.
    Each of the original step's three parts can be switched on its own (``--attack-grads``, ``--attack-stats``,
    ``--attack-target``; by default the style's), to measure which of them a row's numbers owe to.
    ``--attack-bn eval`` runs the attack's forward passes with eval-mode BatchNorm (running statistics), as a
    test-time attack sees the encoder; in train mode, perturbing a whole batch jointly can move its statistics."""

    name, display = "pgd", "PGD adversarial training"
    variants = {"isolated": ("--attack-style", "isolated")}  # the seed's rows use the original code's step
    legacy = {"attack_style": "isolated"}  # the only step before the styles existed

    @classmethod
    def add_flags(cls, group):
        super().add_flags(group)
        group.add_argument("--pgd-steps", type=nonneg_int, default=5)
        group.add_argument("--random-start", action="store_true", help="start PGD at a uniform point, not at 0")
        group.add_argument("--attack-style", choices=("original", "isolated"), default="isolated",
                           help="original: the original code's step (attack gradients reach the optimizer, "
                                "BatchNorm statistics move); isolated: textbook PGD-AT")
        group.add_argument("--attack-bn", choices=("train", "eval"), default="train",
                           help="BatchNorm mode of the attack's forward passes")
        for key, (isolated, original) in STYLE_PARTS.items():
            group.add_argument("--" + key.replace("_", "-"), choices=(isolated, original), default=None,
                               help=f"{PART_HELP[key]} (default: the style's; isolated {isolated}, original {original})")

    @classmethod
    def label(cls, cfg):
        # configs from before the styles existed trained with the isolated step
        style = cfg.get("attack_style", "isolated")
        words = [f"{cfg['pgd_steps']}-step PGD", style, *cls.departures(cfg)]
        words += [PART_WORDS[cfg[key]] for key in STYLE_PARTS
                  if cfg.get(key) not in (None, STYLE_PARTS[key][style == "original"])]
        return ", ".join(words + (["eval-mode BN attack"] if cfg.get("attack_bn") == "eval" else []))

    @classmethod
    def passes_per_batch(cls, cfg):
        return cfg["pgd_steps"] + 1 + cls.clean_passes(cfg)

    def craft(self, clean, target):
        """(k, 3, H, W) clean rows, (n, 3, H, W) rows to perturb -> the perturbed rows."""
        learner, cfg = self.learner, self.cfg
        accumulate, move_stats, own_target = (original_part(cfg, key) for key in STYLE_PARTS)
        # accumulated gradients must pass the wrapped (DDP) model to be reduced; discarded ones must not
        net = learner.net if accumulate else learner.attack_net
        if own_target:
            views = lambda x: learner.method.original_attack_views(clean, target, x)
        else:
            views = lambda x: torch.cat([clean, x])
        modes = eval_bn(learner.model) if cfg["attack_bn"] == "eval" else nullcontext()
        with modes, nullcontext() if move_stats else frozen_bn_stats(learner.model):
            return pgd_linf(lambda x: learner.attack_loss(views(x), net), target, cfg["eps"], cfg["alpha"],
                            cfg["pgd_steps"], cfg["random_start"], accumulate=accumulate)

    def step(self, views):
        accumulate = original_part(self.cfg, "attack_grads")
        if accumulate:
            self.learner.zero_grad()
        clean, target = self.split(views)
        loss, terms = self.objective(views, torch.cat([clean, self.craft(clean, target)]))
        self.learner.update(loss, zero_grad=not accumulate)
        return loss, terms


# each part of the original step: (its isolated value, its original value)
STYLE_PARTS = {"attack_grads": ("discard", "accumulate"), "attack_stats": ("restore", "move"),
               "attack_target": ("training", "original")}
PART_HELP = {"attack_grads": "the attack steps' parameter gradients: thrown away, or added to the training step's",
             "attack_stats": "BatchNorm running statistics after the attack: restored, or moved by its forwards",
             "attack_target": "what the attack maximises: the training loss, or the method's original_attack_views"}
PART_WORDS = {"discard": "attack gradients discarded", "accumulate": "attack gradients summed",
              "restore": "statistics restored after the attack", "move": "statistics moved by the attack",
              "training": "attack on the training loss", "original": "the original attack target"}


def original_part(cfg, key) -> bool:
    """Whether the run's step has this part of the original step: its own flag, else its attack style's."""
    style = cfg.get("attack_style", "isolated")
    value = cfg.get(key) or STYLE_PARTS[key][style == "original"]
    return value == STYLE_PARTS[key][1]
