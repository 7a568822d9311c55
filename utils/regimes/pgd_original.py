"""The original CF-AMC-SSL code's PGD step, which produced the paper's PGD rows (``--attack-style original``, the
default of ``main_empssl_adv.py`` and ``main_simclr_adv.py``). It differs from the textbook step in three parts:
every attack step calls ``backward()``, so the optimizer applies the sum of the attack steps' parameter
gradients (the first at the clean views) and the training step's; the attack's forward passes move BatchNorm
running statistics; and it maximises the method's ``original_attack_views`` (SimCLR: view 2 against its own
perturbed copy)."""
from contextlib import contextmanager, nullcontext

import torch

from attacks import frozen_bn_stats, pgd_linf
from utils.regimes.pgd import PGD


class OriginalPGD(PGD):
    accumulate = move_stats = own_target = True  # the three parts; the ablation layer may switch each off

    @contextmanager
    def attack_mode(self):
        with nullcontext() if self.move_stats else frozen_bn_stats(self.learner.model):
            yield

    def craft(self, clean, target):
        learner, cfg = self.learner, self.cfg
        # accumulated gradients must pass the wrapped (DDP) model to be reduced; discarded ones must not
        net = learner.net if self.accumulate else learner.model
        attacked = learner.method.original_attack_views if self.own_target else lambda c, t, x: torch.cat([c, x])
        with self.attack_mode():
            return pgd_linf(lambda x: learner.attack_loss(attacked(clean, target, x), net), target, cfg["eps"],
                            cfg["alpha"], cfg["pgd_steps"], cfg["random_start"], accumulate=self.accumulate)

    def step(self, views):
        if self.accumulate:  # the optimizer applies the attack steps' gradients with the training step's
            self.learner.zero_grad()
        clean, target = self.split(views)
        loss, terms = self.learner.loss(torch.cat([clean, self.craft(clean, target)]))
        self.learner.update(loss, zero_grad=not self.accumulate)
        return loss, terms
