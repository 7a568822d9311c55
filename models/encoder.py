"""The self-supervised encoder: backbone, pre-feature layer and projector."""
import torch
import torch.nn.functional as F
from torch import nn

from .resnet import ARCHS


class Encoder(nn.Module):
    """Backbone -> ``pre_feature`` (Linear+BN+ReLU) -> ``projection`` (Linear+BN+ReLU+Linear).

    Module names follow the original EMP-SSL code so that its checkpoints load after stripping ``module.``.
    """

    def __init__(self, z_dim: int, arch: str = "resnet18", width: int = 64, hidden_dim: int = 4096,
                 stem: str = "cifar"):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
        self.z_dim = z_dim
        self.backbone = ARCHS[arch](width, stem)
        feat_dim = self.backbone.out_dim
        self.pre_feature = nn.Sequential(nn.Linear(feat_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU())
        self.projection = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, self.z_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] -> (B, z_dim) L2-normalised embeddings."""
        return F.normalize(self.projection(self.pre_feature(self.backbone(x))), dim=-1)

    def features(self, x: torch.Tensor, kind: str = "pre") -> torch.Tensor:
        """Probe features: ``pre`` = (B, hidden_dim) pre_feature output, ``backbone`` = (B, 8*width) pooled."""
        h = self.backbone(x)
        if kind == "backbone":
            return h
        if kind == "pre":
            return self.pre_feature(h)
        raise ValueError(f"unknown feature kind {kind!r}; choose 'pre' or 'backbone'")

    def feature_dim(self, kind: str = "pre") -> int:
        return self.backbone.out_dim if kind == "backbone" else self.pre_feature[0].out_features


def build_encoder(z_dim: int, arch: str = "resnet18", width: int = 64, hidden_dim: int = 4096,
                  stem: str = "cifar") -> Encoder:
    """An encoder whose embedding has ``z_dim`` dimensions (``utils.engine.blocks.encoder_for`` takes a method's
    name)."""
    return Encoder(z_dim, arch, width, hidden_dim, stem)

