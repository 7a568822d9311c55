"""The original CF-AMC-SSL code's PGD step, which produced the paper's PGD rows (``--attack-style original``, the
default of ``main_empssl_adv.py`` and ``main_simclr_adv.py``). It differs from the textbook step in three parts:
every attack step calls ``backward()``, so the optimizer applies the sum of the attack steps' parameter
gradients (the first at the clean views) and the training step's; the attack's forward passes move BatchNorm
running statistics; and it maximises the method's ``original_attack_views`` (SimCLR: view 2 against its own
perturbed copy). The ablation layer's ``PartedPGD`` switches each part on its own."""
from contextlib import contextmanager

import torch

from attacks import pgd_linf_accumulating
from utils.regimes.pgd import PGD


class OriginalPGD(PGD):
    @contextmanager
    def attack_mode(self):
        """The encoder as the original code's attack saw it: in train mode, its BatchNorm statistics moving."""
        yield

    def craft(self, clean, target):
        learner, cfg = self.learner, self.cfg
        attacked = learner.method.original_attack_views
        # the accumulated gradients pass the wrapped (DDP) model to be reduced
        with self.attack_mode():
            return pgd_linf_accumulating(lambda x: learner.attack_loss(attacked(clean, target, x), learner.net),
                                         target, cfg["eps"], cfg["alpha"], cfg["pgd_steps"], cfg["random_start"])

    def step(self, views):
        self.learner.zero_grad()  # the optimizer applies the attack steps' gradients with the training step's
        clean, target = self.split(views)
        loss, terms = self.learner.loss(torch.cat([clean, self.craft(clean, target)]))
        self.learner.update(loss, zero_grad=False)
        return loss, terms
