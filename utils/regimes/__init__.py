"""The registry of training regimes. Adding one: a ``Regime`` subclass in its own file, and one
``REGIMES.register(...)`` line below (or the same call from your own code)."""
from utils.core.registry import Registry
from utils.regimes.base import Adversarial, Regime, add_radius_flags
from utils.regimes.distill import Distill
from utils.regimes.free import Free
from utils.regimes.pgd import PGD
from utils.regimes.pgd_original import OriginalPGD
from utils.regimes.standard import Standard

REGIMES = Registry("regime")
REGIMES.register(Standard)
REGIMES.register(PGD)
REGIMES.register(OriginalPGD, style="original")  # --attack-style original: the original code's step
REGIMES.register(Free)
REGIMES.register(Distill)  # the project's own: a clean teacher's features, distilled under free perturbations

__all__ = ["REGIMES", "Adversarial", "Regime", "add_radius_flags"]
