"""EMP-SSL (Tong et al., 2023): n views per image, total coding rate + invariance, all views in one forward."""
from losses import empssl_loss
from utils.core.cli import nonneg_float, positive_float
from utils.methods.base import Method


class EMPSSL(Method):
    name, display = "empssl", "EMP-SSL"
    z_dim = 1024
    default_views = 16
    augment = {"jitter": (0.4, 0.4, 0.4, 0.2), "blur_p": 0.1, "solarize_p": 0.1}
    term_names = ("invariance", "tcr")
    clean_views = 0  # the adversary perturbs all n views jointly
    anchors = 0  # leading views whose mean the invariance pulls each view to (0: the mean of all views)

    @classmethod
    def add_flags(cls, group):
        group.add_argument("--tcr-eps", type=positive_float, default=0.2, help="TCR distortion eps")
        group.add_argument("--inv-coef", type=nonneg_float, default=200.0, help="weight of the invariance term")
        group.add_argument("--tcr-coef", type=nonneg_float, default=1.0, help="weight of the TCR term")

    def loss(self, z, tcr_coef=None):
        tcr_coef = self.cfg["tcr_coef"] if tcr_coef is None else tcr_coef
        loss, terms = empssl_loss(z, self.cfg["inv_coef"], tcr_coef, self.cfg["tcr_eps"], self.anchors)
        return loss, [terms["invariance"], terms["tcr"]]
