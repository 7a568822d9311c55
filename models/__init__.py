from .encoder import Z_DIMS, Encoder, LinearProbe, build_encoder
from .resnet import ARCHS, ResNet, resnet18

__all__ = ["ARCHS", "Encoder", "LinearProbe", "ResNet", "Z_DIMS", "build_encoder", "resnet18"]
