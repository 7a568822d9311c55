"""PGD adversarial training, the textbook step (Madry et al., 2018): K steps of L-inf PGD on the
self-supervised loss, gradients to the perturbation only and BatchNorm statistics untouched, then one training
step on the perturbed views. ``--attack-style original`` selects the original code's
step (``pgd_original``, registered as this regime's ``original`` style)."""
from contextlib import contextmanager

import torch

from attacks import frozen_bn_stats, pgd_linf
from utils.core.cli import nonneg_int
from utils.regimes.base import Adversarial


class PGD(Adversarial):
    name, display = "pgd", "PGD adversarial training"

    @classmethod
    def add_flags(cls, group):
        super().add_flags(group)
        group.add_argument("--pgd-steps", type=nonneg_int, default=5)
        group.add_argument("--random-start", action="store_true", help="start PGD at a uniform point, not at 0")
        group.add_argument("--attack-style", choices=("original", "isolated"), default="isolated",
                           help="original: the original code's step (attack gradients reach the optimizer, "
                                "BatchNorm statistics move); isolated: textbook PGD-AT")

    @classmethod
    def passes_per_batch(cls, cfg):
        return cfg["pgd_steps"] + 1

    @contextmanager
    def attack_mode(self):
        """The encoder as the attack's forward passes see it: BatchNorm in train mode, its statistics restored."""
        with frozen_bn_stats(self.learner.model):
            yield

    def craft(self, clean, target):
        """(k, 3, H, W) rows left clean, (n, 3, H, W) rows to perturb -> the perturbed rows."""
        learner, cfg = self.learner, self.cfg
        with self.attack_mode():
            return pgd_linf(lambda x: learner.attack_loss(torch.cat([clean, x]), learner.model), target,
                            cfg["eps"], cfg["alpha"], cfg["pgd_steps"], cfg["random_start"])

    def step(self, views):
        clean, target = self.split(views)
        loss, terms = self.learner.loss(torch.cat([clean, self.craft(clean, target)]))
        self.learner.update(loss)
        return loss, terms
