from .autoattack import autoattack_cascade, reference_autoattack
from .batchnorm import eval_bn, frozen_bn_stats
from .free import FreeAdversary
from .pgd import pgd_linf, pgd_linf_accumulating
from .trades import trades_adversary, trades_kl, trades_loss

__all__ = ["FreeAdversary", "autoattack_cascade", "reference_autoattack", "eval_bn", "frozen_bn_stats", "pgd_linf",
           "pgd_linf_accumulating", "trades_adversary", "trades_kl", "trades_loss"]
