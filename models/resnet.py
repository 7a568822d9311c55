"""ResNet-18 with torchvision's parameter names, with the CIFAR stem or the ImageNet one.

The CIFAR stem is a 3x3 stride-1 convolution with no max-pool, as is usual for 32x32 images; the ImageNet stem
is torchvision's (7x7 stride-2 convolution, 3x3 stride-2 max-pool), which cuts the feature maps 4x per side
before the first stage. Every other name and shape matches ``torchvision.models.resnet18`` (with ``fc``
removed); with the ImageNet stem its state dict loads unchanged.
"""
import torch
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


STEMS = ("cifar", "imagenet")
# Views larger than this take the ImageNet stem by default (solo-learn's rule: CIFAR's stem for CIFAR-sized
# images); at 64x64 the CIFAR stem keeps 8x8 maps before pooling, as at 32x32 it keeps 4x4.
CIFAR_STEM_MAX_SIZE = 64


def default_stem(view_size: int) -> str:
    return "cifar" if view_size <= CIFAR_STEM_MAX_SIZE else "imagenet"


class ResNet(nn.Module):
    """(B, 3, H, W) images -> (B, 8 * width) globally pooled features."""

    def __init__(self, blocks_per_stage=(2, 2, 2, 2), width: int = 64, stem: str = "cifar"):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
        self.stem = stem
        if stem == "cifar":
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        in_planes = width
        for stage, num_blocks in enumerate(blocks_per_stage):
            planes = width * 2**stage
            stride = 1 if stage == 0 else 2
            layers = []
            for b in range(num_blocks):
                layers.append(BasicBlock(in_planes, planes, stride if b == 0 else 1))
                in_planes = planes
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
        self.out_dim = in_planes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The stem reads the image in its weights' precision (float32) even under bf16 autocast: bf16's spacing of
        # 1/256 in [0.5, 1) would round away most steps of an 8/255 perturbation (0.01 each).
        with torch.autocast(x.device.type, enabled=False):
            x = self.conv1(x.to(self.conv1.weight.dtype))
        x = self.relu(self.bn1(x))
        if self.stem == "imagenet":
            x = self.maxpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


def resnet18(width: int = 64, stem: str = "cifar") -> ResNet:
    return ResNet((2, 2, 2, 2), width, stem)


def resnet34(width: int = 64, stem: str = "cifar") -> ResNet:
    return ResNet((3, 4, 6, 3), width, stem)


ARCHS = {"resnet18": resnet18, "resnet34": resnet34}
