"""The registry of training regimes. Adding one: a ``Regime`` subclass in its own file, and one
``REGIMES.register(...)`` line below (or the same call from your own code)."""
from ..registry import Registry
from .base import Adversarial, Regime, add_radius_flags
from .distill import Distill
from .free import Free
from .pgd import PGD
from .standard import Standard

REGIMES = Registry("regime")
REGIMES.register(Standard)
REGIMES.register(PGD)  # --attack-style original selects the original code's step, pgd_original.OriginalPGD
REGIMES.register(Free)
REGIMES.register(Distill)  # the project's own: a clean teacher's features, distilled under free perturbations

__all__ = ["REGIMES", "Adversarial", "Regime", "add_radius_flags"]
