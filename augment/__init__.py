from .multiview import PRESETS, AugmentConfig, MultiViewAugment, ViewParams, augment_config
from .reference import ReferenceAugment, tensor_to_pil

__all__ = ["PRESETS", "AugmentConfig", "MultiViewAugment", "ReferenceAugment", "ViewParams",
           "augment_config", "tensor_to_pil"]
