from .encoder import Encoder, build_encoder
from .resnet import ARCHS, STEMS, ResNet, default_stem, resnet18

__all__ = ["ARCHS", "STEMS", "Encoder", "ResNet", "build_encoder", "default_stem", "resnet18"]
