from .multiview import PRESETS, WEAK_SCALE, AugmentConfig, MultiViewAugment, ViewParams, at_strength, augment_config
from .reference import ReferenceAugment, tensor_to_pil

__all__ = ["PRESETS", "WEAK_SCALE", "AugmentConfig", "MultiViewAugment", "ReferenceAugment", "ViewParams",
           "at_strength", "augment_config", "tensor_to_pil"]
