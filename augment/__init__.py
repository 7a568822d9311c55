from .multiview import METHODS, PRESETS, AugmentConfig, MultiViewAugment, ViewParams, augment_config
from .reference import ReferenceAugment, tensor_to_pil

__all__ = ["METHODS", "PRESETS", "AugmentConfig", "MultiViewAugment", "ReferenceAugment", "ViewParams",
           "augment_config", "tensor_to_pil"]
