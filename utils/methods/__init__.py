"""The registry of self-supervised methods. Adding one: a ``Method`` subclass in its own file, and one
``METHODS.register(...)`` line below (or the same call from your own code)."""
from utils.core.registry import Registry
from utils.methods.base import Method
from utils.methods.empssl import EMPSSL
from utils.methods.simclr import SimCLR

METHODS = Registry("method")
METHODS.register(SimCLR)
METHODS.register(EMPSSL)

__all__ = ["METHODS", "Method"]
