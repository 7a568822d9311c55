"""The building blocks for a registered method: ``models`` and ``augment`` know no registry, so the method's
name is resolved here into the embedding size and the augmentation settings they take."""
from augment import MultiViewAugment, ReferenceAugment
from models import Encoder, build_encoder, default_stem
from utils.core.errors import UsageError
from utils.methods import METHODS

MIN_VIEW_SIZE = 8


def encoder_for(method: str, arch: str = "resnet18", width: int = 64, hidden_dim: int = 4096,
                stem: str = "cifar", z_dim: int | None = None) -> Encoder:
    """``models.build_encoder`` with the method's embedding size (``z_dim``, when given, instead)."""
    return build_encoder(z_dim or METHODS.lookup(method).z_dim, arch, width, hidden_dim, stem)


def augment_settings(method: str, **overrides) -> dict:
    """The method's augmentation settings (``Method.augment``) with the ``overrides`` that are not None."""
    return {**METHODS.lookup(method).augment, **{k: v for k, v in overrides.items() if v is not None}}


def augment_for(num_views: int, method: str, preset: str, weak_views: int = 0, **overrides) -> MultiViewAugment:
    """``augment.MultiViewAugment`` with the method's settings; ``overrides`` (None: the method's) win."""
    return MultiViewAugment(num_views, preset, weak_views, **augment_settings(method, **overrides))


def reference_for(num_views: int, method: str, preset: str, **overrides) -> ReferenceAugment:
    """``augment.ReferenceAugment`` with the method's settings, the oracle of ``augment_for``'s views."""
    return ReferenceAugment(num_views, preset, **augment_settings(method, **overrides))


def crop_overrides(cfg: dict) -> dict:
    """A run's ``--scale-min/max`` and ``--ratio-min/max`` as ``MultiViewAugment``'s scale and ratio (None: the
    preset's)."""
    scale = (cfg["scale_min"], cfg["scale_max"]) if cfg.get("scale_min") is not None else None
    ratio = (cfg["ratio_min"], cfg["ratio_max"]) if cfg.get("ratio_min") is not None else None
    return {"scale": scale, "ratio": ratio}


def resolve_sizes(cfg: dict, images) -> None:
    """Fills in a training run's image size (its training images'), view size (default: the image size) and
    stem (auto: by the view size), so that its checkpoints record what the encoder saw."""
    height, width = images.shape[-2:]
    if height != width:
        raise UsageError(f"the training images are {width}x{height}, not square; pass --image-size N to resize "
                         "their centre squares to NxN")
    cfg["image_size"] = int(height)
    cfg["view_size"] = cfg.get("view_size") or cfg["image_size"]
    if cfg["view_size"] < MIN_VIEW_SIZE:
        raise UsageError(f"--view-size {cfg['view_size']} is too small; choose at least {MIN_VIEW_SIZE}")
    if cfg.get("stem", "auto") == "auto":
        cfg["stem"] = default_stem(cfg["view_size"])


def run_augment(cfg: dict, num_views: int | None = None) -> MultiViewAugment:
    """The views a training run cuts, its weak ones included; ``num_views``: that many of its strong views instead
    (an evaluation's test views)."""
    weak = cfg.get("weak_views", 0) if num_views is None else 0
    return augment_for(num_views or cfg["num_views"], cfg["method"], cfg["preset"], weak, size=cfg["view_size"],
                       **crop_overrides(cfg))


def run_encoder(cfg: dict) -> Encoder:
    """A fresh encoder of a training run's method, architecture, sizes and stem."""
    return encoder_for(cfg["method"], cfg["arch"], cfg["width"], cfg["hidden_dim"], cfg["stem"], cfg["z_dim"])
