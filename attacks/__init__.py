from .batchnorm import frozen_bn_stats
from .free import FreeAdversary
from .pgd import pgd_linf

__all__ = ["FreeAdversary", "frozen_bn_stats", "pgd_linf"]
