from .encoder import Encoder, build_encoder
from .resnet import ARCHS, ResNet, resnet18

__all__ = ["ARCHS", "Encoder", "ResNet", "build_encoder", "resnet18"]
