import torch

from .invariance import invariance
from .tcr import total_coding_rate


def empssl_loss(z: torch.Tensor, inv_coef: float = 200.0, tcr_coef: float = 1.0, tcr_eps: float = 0.2,
                anchors: int = 0):
    """EMP-SSL objective -inv_coef * invariance - tcr_coef * mean over views of TCR.

    z: (n_views, m, d); ``anchors``: see ``invariance``. Returns (loss, terms) with terms = {"invariance": scalar,
    "tcr": scalar} (detached), for logging.
    """
    inv = invariance(z, anchors)
    tcr = total_coding_rate(z, tcr_eps).mean()
    loss = -inv_coef * inv - tcr_coef * tcr
    return loss, {"invariance": inv.detach(), "tcr": tcr.detach()}
