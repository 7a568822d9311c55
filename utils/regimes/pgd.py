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

    @classmethod
    def label(cls, cfg):
        # configs from before the styles existed trained with the isolated step
        words = [f"{cfg['pgd_steps']}-step PGD", cfg.get("attack_style", "isolated"), *cls.departures(cfg)]
        return ", ".join(words + (["eval-mode BN attack"] if cfg.get("attack_bn") == "eval" else []))

    @classmethod
    def passes_per_batch(cls, cfg):
        return cfg["pgd_steps"] + 1 + cls.clean_passes(cfg)

    def craft(self, clean, target):
        """(k, 3, H, W) clean rows, (n, 3, H, W) rows to perturb -> the perturbed rows."""
        learner, cfg = self.learner, self.cfg
        original = cfg["attack_style"] == "original"
        if original:
            net, views = learner.net, lambda x: learner.method.original_attack_views(clean, target, x)
        else:
            net, views = learner.attack_net, lambda x: torch.cat([clean, x])
        modes = eval_bn(learner.model) if cfg["attack_bn"] == "eval" else nullcontext()
        with modes, nullcontext() if original else frozen_bn_stats(learner.model):
            return pgd_linf(lambda x: learner.loss(views(x), net)[0], target, cfg["eps"], cfg["alpha"],
                            cfg["pgd_steps"], cfg["random_start"], accumulate=original)

    def step(self, views):
        original = self.cfg["attack_style"] == "original"
        if original:
            self.learner.zero_grad()
        clean, target = self.split(views)
        loss, terms = self.objective(views, torch.cat([clean, self.craft(clean, target)]))
        self.learner.update(loss, zero_grad=not original)
        return loss, terms
