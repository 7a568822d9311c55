"""SimCLR (Chen et al., 2020): two views, NT-Xent. Each view is its own forward pass, as in the original code
and solo-learn, so BatchNorm normalises the clean and the perturbed view each with its own statistics."""
import torch

from losses import nt_xent
from utils.core.cli import positive_float
from utils.methods.base import Method


class SimCLR(Method):
    name, display = "simclr", "SimCLR"
    z_dim = 128
    views = 2
    augment = {"jitter": (0.4, 0.4, 0.4, 0.1), "blur_p": 0.0, "solarize_p": 0.0}
    per_view_forward = True
    clean_views = 1  # view 1 stays clean, the adversary perturbs view 2

    @classmethod
    def add_flags(cls, group):
        group.add_argument("--temperature", type=positive_float, default=0.07)

    def original_attack_views(self, clean, target, x_adv):
        """The original code's attack: NT-Xent between view 2 and its own perturbed copy (view 1 plays no part)."""
        if len(clean) == 0:  # --clean-views 0: no clean view 1 to train against; both views are perturbed
            return x_adv
        return torch.cat([target, x_adv])

    def loss(self, z):
        return nt_xent(z[0], z[1], self.cfg["temperature"]), []
