"""The registry of self-supervised methods. Adding one: a ``Method`` subclass in its own file, and one
``METHODS.register(...)`` line below (or the same call from your own code)."""
from ..registry import Registry
from .base import Method
from .empssl import EMPSSL
from .simclr import SimCLR

METHODS = Registry("method")
METHODS.register(SimCLR)
METHODS.register(EMPSSL)

__all__ = ["METHODS", "Method"]
