"""The per-image torchvision pipeline on PIL images: the oracle for ``MultiViewAugment``'s distributions and
the speed baseline of ``benchmarks.bench_augment``. Not used in training."""
import numpy as np
import torch
from PIL import Image

from .multiview import augment_config, blur_kernel


class ReferenceAugment:
    """``aug(pil_image)`` -> (num_views, 3, size, size) float views in [0, 1], each drawn independently by
    RandomResizedCrop, RandomHorizontalFlip, RandomApply(ColorJitter), RandomGrayscale,
    RandomApply(GaussianBlur), RandomSolarize(128) and ToTensor. Takes ``MultiViewAugment``'s arguments."""

    def __init__(self, num_views, preset, **kwargs):
        # torchvision is imported here, not with the package: its import takes seconds (it loads torch._dynamo),
        # and every training and evaluation process imports ``augment`` without needing the oracle.
        from torchvision import transforms as T

        self.preset = preset
        self.config = cfg = augment_config(num_views, preset, **kwargs)
        self.num_views = cfg.num_views
        steps = [T.RandomResizedCrop(cfg.size, scale=cfg.scale, ratio=cfg.ratio), T.RandomHorizontalFlip(cfg.flip_p)]
        # Off steps are left out, as the batched path skips them: the baseline should not pay for them either.
        if cfg.jitter_p > 0 and any(cfg.jitter):
            steps.append(T.RandomApply([T.ColorJitter(*cfg.jitter)], p=cfg.jitter_p))
        if cfg.grayscale_p > 0:
            steps.append(T.RandomGrayscale(cfg.grayscale_p))
        if cfg.blur_p > 0:
            steps.append(T.RandomApply([T.GaussianBlur(blur_kernel(cfg.size), cfg.blur_sigma)], p=cfg.blur_p))
        if cfg.solarize_p > 0:
            steps.append(T.RandomSolarize(128, p=cfg.solarize_p))
        steps.append(T.ToTensor())
        self.transform = T.Compose(steps)

    def __repr__(self):
        return f"ReferenceAugment(preset={self.preset!r}, {self.config})"

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.stack([self.transform(image) for _ in range(self.num_views)])


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """A uint8 (3, H, W) tensor as an RGB PIL image."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a uint8 (3, H, W) tensor, got {image.dtype} {tuple(image.shape)}")
    return Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy()))
