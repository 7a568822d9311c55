from .distill import distill_loss
from .empssl import empssl_loss
from .invariance import invariance
from .nt_xent import multiview_nt_xent, nt_xent
from .tcr import total_coding_rate

__all__ = ["distill_loss", "empssl_loss", "invariance", "multiview_nt_xent", "nt_xent", "total_coding_rate"]
