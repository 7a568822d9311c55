"""EMP-SSL (Tong et al., 2023): n views per image, total coding rate + invariance, all views in one forward."""
from losses import empssl_loss

from ..cli import nonneg_float, positive_float
from .base import Method


class EMPSSL(Method):
    name, display = "empssl", "EMP-SSL"
    z_dim = 1024
    default_views = 16
    augment = {"jitter": (0.4, 0.4, 0.4, 0.2), "blur_p": 0.1, "solarize_p": 0.1}
    term_names = ("invariance", "tcr")
    clean_views = 0  # the adversary perturbs all n views jointly
    scripts = {
        "standard": ("main_empssl", {"epochs": 30, "batch_size": 100, "num_views": 16}),
        "pgd": ("main_empssl_adv", {"epochs": 30, "batch_size": 100, "num_views": 16, "attack_style": "original"}),
        "free": ("main_empssl_free_adv", {"epochs": 10, "batch_size": 100, "num_views": 16}),
    }
    paper = (
        ("patch", "pgd", 61.0, 37.65, 16.95, 530),
        ("crop", "pgd", 76.55, 53.3, 28.49, 530),
        ("patch", "free", 61.83, 42.28, 21.53, 97),
        ("crop", "free", 75.88, 55.97, 33.34, 97),
    )
    aliases = {("crop", "free"): "CF-AMC-SSL"}

    @classmethod
    def add_flags(cls, group):
        group.add_argument("--tcr-eps", type=positive_float, default=0.2, help="TCR distortion eps")
        group.add_argument("--inv-coef", type=nonneg_float, default=200.0, help="weight of the invariance term")
        group.add_argument("--tcr-coef", type=nonneg_float, default=1.0, help="weight of the TCR term")

    def loss(self, z):
        loss, terms = empssl_loss(z, self.cfg["inv_coef"], self.cfg["tcr_coef"], self.cfg["tcr_eps"])
        return loss, [terms["invariance"], terms["tcr"]]
