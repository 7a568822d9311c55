import torch

from attacks import frozen_bn_stats, pgd_linf

from ..cli import nonneg_int
from .base import Regime, add_radius_flags


class PGD(Regime):
    """K steps of L-inf PGD on the self-supervised loss, then one training step on the perturbed views.

    Crafting changes nothing in the model: gradients go to the perturbation only, and BatchNorm running
    statistics are restored afterwards (batch statistics are still used, as in the training step)."""

    name, display = "pgd", "PGD adversarial training"

    @classmethod
    def add_flags(cls, group):
        add_radius_flags(group)
        group.add_argument("--pgd-steps", type=nonneg_int, default=5)
        group.add_argument("--random-start", action="store_true", help="start PGD at a uniform point, not at 0")

    @classmethod
    def label(cls, cfg):
        return f"{cfg['pgd_steps']}-step PGD"

    @classmethod
    def passes_per_batch(cls, cfg):
        return cfg["pgd_steps"] + 1

    def craft(self, clean, target):
        """(k, 3, H, W) clean rows, (n, 3, H, W) rows to perturb -> the perturbed rows."""
        learner, cfg = self.learner, self.cfg
        with frozen_bn_stats(learner.model):
            return pgd_linf(lambda x: learner.loss(torch.cat([clean, x]), learner.attack_net)[0], target,
                            cfg["eps"], cfg["alpha"], cfg["pgd_steps"], cfg["random_start"])

    def step(self, views):
        clean, target = self.split(views)
        loss, terms = self.learner.loss(torch.cat([clean, self.craft(clean, target)]))
        self.learner.update(loss)
        return loss, terms
