"""Batched multi-view augmentation on the training device: torchvision's SimCLR / EMP-SSL pipeline, per view.

Every view of every image gets its own random crop, flip, colour jitter, grayscale, blur and solarize, drawn
on the input's device without host synchronisation, and applied to the whole batch with fixed-size tensor
ops so the result is differentiable w.r.t. a float input. ``apply`` reproduces torchvision's functional ops
on float tensors (``resized_crop`` with antialias, ``adjust_*``, ``rgb_to_grayscale``, ``gaussian_blur``,
``solarize``) up to float rounding, for crops no larger than the output size (always the case when the views
are as large as the images, the default); larger crops are resampled bilinearly without antialiasing. The crop
and patch presets are fractions of the image's area, so they cut the same views of an image at any size.
"""
import math
from dataclasses import dataclass, fields, replace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

PRESETS = {
    "crop": {"scale": (0.08, 1.0), "ratio": (3 / 4, 4 / 3)},
    "patch": {"scale": (0.25, 0.25), "ratio": (1.0, 1.0)},
}
# The weak views of ``weak_views``: near-full crops with a flip and no colour operation, as the images that AdvCL,
# DeACL and ProFeAT craft their adversarial examples from (a 4-pixel padded random crop of a 32x32 image keeps at
# least 77% of it).
WEAK_SCALE = (0.75, 1.0)
# jitter = (brightness, contrast, saturation, hue): SimCLR's pipeline. A method passes its own settings in.
DEFAULTS = {"jitter": (0.4, 0.4, 0.4, 0.1), "blur_p": 0.0, "solarize_p": 0.0}
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
# The original code's 13-tap blur on 32x32 views, as a fraction of the view's side (odd): 39 taps at 96x96.
BLUR_KERNEL_FRACTION = 13 / 32


def blur_kernel(size: int) -> int:
    """Taps of the Gaussian blur of ``size`` x ``size`` views: 13 at 32, in proportion elsewhere, odd."""
    taps = max(3, round(size * BLUR_KERNEL_FRACTION))
    return taps if taps % 2 else taps + 1
# Device types on which ops applied to a random subset of views gather it (see _where_views).
_GATHER_MASKED_VIEWS = {"cpu": True}


@dataclass(frozen=True)
class AugmentConfig:
    num_views: int
    scale: tuple
    ratio: tuple
    flip_p: float
    jitter_p: float
    jitter: tuple
    grayscale_p: float
    blur_p: float
    blur_sigma: tuple
    solarize_p: float
    size: int


def augment_config(num_views, preset, *, scale=None, ratio=None, flip_p=0.5, jitter_p=0.8, jitter=None,
                   grayscale_p=0.2, blur_p=None, blur_sigma=(0.1, 2.0), solarize_p=None, size=32) -> AugmentConfig:
    """Resolves the ``None`` defaults from ``DEFAULTS`` and ``preset`` and validates every setting."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    defaults = {**DEFAULTS, **PRESETS[preset]}
    cfg = AugmentConfig(
        num_views=int(num_views),
        scale=tuple(float(v) for v in (defaults["scale"] if scale is None else scale)),
        ratio=tuple(float(v) for v in (defaults["ratio"] if ratio is None else ratio)),
        flip_p=float(flip_p),
        jitter_p=float(jitter_p),
        jitter=tuple(float(v) for v in (defaults["jitter"] if jitter is None else jitter)),
        grayscale_p=float(grayscale_p),
        blur_p=float(defaults["blur_p"] if blur_p is None else blur_p),
        blur_sigma=tuple(float(v) for v in blur_sigma),
        solarize_p=float(defaults["solarize_p"] if solarize_p is None else solarize_p),
        size=int(size),
    )
    if cfg.num_views < 1 or cfg.size < 1:
        raise ValueError(f"num_views and size must be positive, got {cfg.num_views} and {cfg.size}")
    for name, (lo, hi) in (("scale", cfg.scale), ("ratio", cfg.ratio), ("blur_sigma", cfg.blur_sigma)):
        if not 0 < lo <= hi:
            raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(lo, hi)}")
    if len(cfg.jitter) != 4 or min(cfg.jitter) < 0 or cfg.jitter[3] > 0.5:
        raise ValueError(f"jitter must be (brightness, contrast, saturation, hue) >= 0, hue <= 0.5, got {cfg.jitter}")
    for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise ValueError(f"{name} must be a probability, got {getattr(cfg, name)}")
    if cfg.blur_p > 0 and cfg.size <= blur_kernel(cfg.size) // 2:
        raise ValueError(f"blurring needs size > {blur_kernel(cfg.size) // 2} for reflect padding, got {cfg.size}")
    return cfg


@dataclass
class ViewParams:
    """Per-view random parameters, each a tensor with one row per view in view-major order (row v*B + i is
    view v of image i). An optional field left ``None`` turns its operation off, as does a ``None`` jitter
    factor (like torchvision's ``ColorJitter``). ``order`` holds torchvision's ``fn_idx`` per view: a
    permutation of 0 brightness, 1 contrast, 2 saturation, 3 hue."""
    top: Tensor                           # int64 crop box, in pixels of the input image
    left: Tensor
    height: Tensor
    width: Tensor
    flip: Optional[Tensor] = None         # bool
    jitter: Optional[Tensor] = None       # bool: colour jitter applied
    brightness: Optional[Tensor] = None   # float factors
    contrast: Optional[Tensor] = None
    saturation: Optional[Tensor] = None
    hue: Optional[Tensor] = None
    order: Optional[Tensor] = None        # int64 (N, 4)
    grayscale: Optional[Tensor] = None    # bool
    blur: Optional[Tensor] = None         # bool
    sigma: Optional[Tensor] = None        # float
    solarize: Optional[Tensor] = None     # bool

    def __len__(self):
        return self.top.shape[0]

    def repeat_images(self, batch_size: int) -> "ViewParams":
        """The views of one image (this holds one row per view) for each of ``batch_size`` images, view-major:
        every image of a batch gets the same views."""
        return ViewParams(**{f.name: None if getattr(self, f.name) is None
                             else getattr(self, f.name).repeat_interleave(batch_size, dim=0) for f in fields(self)})

    def to(self, device) -> "ViewParams":
        return ViewParams(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                             for f in fields(self)})


def at_strength(cfg: AugmentConfig, strength: float) -> AugmentConfig:
    """DynACL's augmentation strength (Luo et al., 2023): each probability and jitter magnitude times ``strength``,
    and the crop's area fractions moved toward the whole image, ``1 - (1 - a) * strength``; 1 is ``cfg`` itself,
    0 the whole image, flipped or not."""
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if strength == 1:
        return cfg
    return replace(cfg, scale=tuple(1 - (1 - a) * strength for a in cfg.scale),
                   jitter=tuple(j * strength for j in cfg.jitter), jitter_p=cfg.jitter_p * strength,
                   grayscale_p=cfg.grayscale_p * strength, blur_p=cfg.blur_p * strength,
                   solarize_p=cfg.solarize_p * strength)


class MultiViewAugment:
    """``aug(x, generator=None, strength=1)``: (B, 3, H, W) uint8 or [0, 1] float images -> (num_views * B, 3, size,
    size) float views in [0, 1], view-major (row v * B + i is view v of image i), on x's device, differentiable
    w.r.t. a float x. It is ``apply(x, sample_params(B, x.device, generator, (H, W), strength))``: the two steps let
    the views' parameters stay fixed while the images change (e.g. under attack). The settings are
    ``augment_config``'s; ``utils.engine.blocks.augment_for`` fills in a method's own. The last ``weak_views`` views of
    each image are weak: crops of ``WEAK_SCALE`` of its area, flipped or not, with no colour operation."""

    def __init__(self, num_views, preset, weak_views=0, **kwargs):
        self.preset = preset
        self.config = augment_config(num_views, preset, **kwargs)
        self.num_views, self.size = self.config.num_views, self.config.size
        if not 0 <= weak_views <= self.num_views:
            raise ValueError(f"weak_views must be in [0, {self.num_views}], got {weak_views}")
        self.weak_views = int(weak_views)

    def __repr__(self):
        return f"MultiViewAugment(preset={self.preset!r}, weak_views={self.weak_views}, {self.config})"

    def __call__(self, x: Tensor, generator: Optional[torch.Generator] = None, strength: float = 1.0) -> Tensor:
        params = self.sample_params(x.shape[0], x.device, generator=generator, image_size=tuple(x.shape[-2:]),
                                    strength=strength)
        return self.apply(x, params)

    def sample_params(self, batch_size, device, generator=None, image_size=None, strength=1.0) -> ViewParams:
        """Draws the parameters of ``num_views`` views of each of ``batch_size`` images of ``image_size``
        (H, W), default (size, size), from torchvision's distributions at ``strength`` (``at_strength``), on
        ``device``. The crop boxes fit that size; ``apply`` them to images of it."""
        cfg = at_strength(self.config, strength)
        n = cfg.num_views * batch_size
        height, width = (int(v) for v in image_size) if image_size is not None else (cfg.size, cfg.size)
        # One draw for all per-view numbers: on GPUs every random op is a kernel launch.
        u = torch.rand(n, 14, device=device, generator=generator)
        flip, jitter, brightness, contrast, saturation, hue, *order, gray, blur, sigma, solarize = u.unbind(1)
        crop = torch.rand(n, 22, device=device, dtype=torch.float64, generator=generator)
        top, left, h, w = _sample_boxes(crop, height, width, cfg.scale, cfg.ratio)
        params = ViewParams(top=top, left=left, height=h, width=w)
        if cfg.flip_p > 0:
            params.flip = flip < cfg.flip_p
        b, c, s, max_hue = cfg.jitter
        if cfg.jitter_p > 0 and any(cfg.jitter):
            params.jitter = jitter < cfg.jitter_p
            params.brightness = _uniform(brightness, max(0.0, 1 - b), 1 + b) if b > 0 else None
            params.contrast = _uniform(contrast, max(0.0, 1 - c), 1 + c) if c > 0 else None
            params.saturation = _uniform(saturation, max(0.0, 1 - s), 1 + s) if s > 0 else None
            params.hue = _uniform(hue, -max_hue, max_hue) if max_hue > 0 else None
            params.order = torch.stack(order, dim=1).argsort(dim=1)
        if cfg.grayscale_p > 0:
            params.grayscale = gray < cfg.grayscale_p
        if cfg.blur_p > 0:
            params.blur = blur < cfg.blur_p
            params.sigma = _uniform(sigma, *cfg.blur_sigma)
        if cfg.solarize_p > 0:
            params.solarize = solarize < cfg.solarize_p
        if self.weak_views:
            _make_weak(params, crop, (self.num_views - self.weak_views) * batch_size, height, width, cfg.ratio)
        return params

    def apply(self, x: Tensor, params: ViewParams) -> Tensor:
        """The views of ``params`` cut from ``x`` (B, 3, H, W); float x must be in [0, 1]."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(x.shape)}")
        if len(params) % x.shape[0]:
            raise ValueError(f"{len(params)} view parameters do not split over a batch of {x.shape[0]} images")
        x = x if x.is_floating_point() else x.to(torch.float32).div(255)
        views = _resized_crop_flip(x, params, self.size)
        if params.jitter is not None:
            views = _color_jitter(views, params)
        if params.grayscale is not None:
            views = _where_views(params.grayscale, _grayscale, views)
        if params.blur is not None:
            views = _where_views(params.blur, _gaussian_blur, views, params.sigma)
        if params.solarize is not None:
            views = _where_views(params.solarize, _solarize, views)
        return _ClipRounding.apply(views)


class _ClipRounding(torch.autograd.Function):
    """clamp(y, 0, 1) with the identity gradient: resampling and blurring overshoot [0, 1] by float rounding
    only, and clipping that must not stop the gradient of pixels sitting exactly on 0 or 1."""

    @staticmethod
    def forward(ctx, y):
        return y.clamp(0, 1)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _UnitClamp(torch.autograd.Function):
    """y.clamp_(0, 1) whose gradient is that of torchvision's clamp (none where the clamp bites nor on the
    bounds themselves) except where ``passthrough`` (broadcast against y) holds, where it is the identity:
    a view that a batched blend leaves unchanged must keep its gradient at pixels equal to 0 or 1."""

    @staticmethod
    def forward(ctx, y, passthrough):
        ctx.mark_dirty(y)
        y.clamp_(0, 1)
        ctx.save_for_backward(y, passthrough)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, passthrough = ctx.saved_tensors
        return grad * (((y > 0) & (y < 1)) | passthrough), None


def _make_weak(params: ViewParams, crop: Tensor, first: int, height: int, width: int, ratio: tuple) -> None:
    """Rows ``first`` on of ``params`` as weak views: their boxes redrawn from the same uniforms at ``WEAK_SCALE``,
    their colour operations off (the flips stay)."""
    boxes = _sample_boxes(crop[first:], height, width, WEAK_SCALE, ratio)
    for name, box in zip(("top", "left", "height", "width"), boxes):
        getattr(params, name)[first:] = box
    for name in ("jitter", "grayscale", "blur", "solarize"):
        if getattr(params, name) is not None:
            getattr(params, name)[first:] = False


def _uniform(u, low, high):
    return u * (high - low) + low


def _where_views(mask, fn, x, *per_view):
    """fn(x, *per_view) on the views (rows) where ``mask`` holds, x elsewhere. On CPU, host and device are
    one, so the masked views are gathered and the work scales with their number; elsewhere that number on
    the host would cost a sync, so fn runs on every view and a select keeps the masked ones."""
    if _GATHER_MASKED_VIEWS.get(x.device.type, False):
        index = mask.nonzero().squeeze(1)
        return x.index_copy(0, index, fn(x[index], *(t[index] for t in per_view)))
    return torch.where(mask.view(-1, *(1,) * (x.ndim - 1)), fn(x, *per_view), x)


def _gray(x):
    """``rgb_to_grayscale`` of x (N, 3, ...) as (N, 1, ...), by its own formula."""
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r).add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(1)


def _grayscale(x):
    return _gray(x).expand_as(x).contiguous()


def _solarize(x):
    return torch.where(x >= 0.5, 1 - x, x)


def _sample_boxes(u, height, width, scale, ratio):
    """torchvision ``RandomResizedCrop.get_params`` for n boxes at once from uniforms u (n, 22): all 10
    attempts are drawn and the first that fits is kept, else the same centre crop."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    target = area * _uniform(u[:, :10], *scale)
    aspect = torch.exp(_uniform(u[:, 10:20], *log_ratio))
    # torch.round and Python's round both round half to even.
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)
    found = fits.any(dim=1)

    in_ratio = width / height
    if in_ratio < min(ratio):
        fallback_w, fallback_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fallback_w, fallback_h = int(round(height * max(ratio))), height
    else:
        fallback_w, fallback_h = width, height
    w = torch.where(found, w.gather(1, first).squeeze(1), fallback_w)
    h = torch.where(found, h.gather(1, first).squeeze(1), fallback_h)
    # The minimum guards against u * span rounding up to span.
    top = torch.minimum(torch.floor(u[:, 20] * (height - h + 1)), height - h)
    left = torch.minimum(torch.floor(u[:, 21] * (width - w + 1)), width - w)
    top = torch.where(found, top, (height - fallback_h) // 2)
    left = torch.where(found, left, (width - fallback_w) // 2)
    return top.long(), left.long(), h.long(), w.long()


def _resized_crop_flip(x, p, size):
    """Crop + resize + flip of all views as one ``grid_sample``; the views of an image are stacked as the
    rows of one tall sampling grid, so the image is never copied per view.

    An antialiased bilinear resize of a box to ``size`` pixels, when upsampling, samples the box at the
    half-pixel-centred source position clamped to the box (its triangle weights are renormalised over the
    pixels inside the box), which bilinear ``grid_sample`` reproduces; flipping reverses the x positions."""
    b, _, height, width = x.shape
    v = len(p) // b

    def image_major(t):
        return t.view(v, b).t().reshape(-1)

    start = torch.stack((image_major(p.left), image_major(p.top)), dim=1).to(x.dtype).unsqueeze(2)
    length = torch.stack((image_major(p.width), image_major(p.height)), dim=1).to(x.dtype).unsqueeze(2)
    u = torch.arange(size, device=x.device, dtype=x.dtype).expand(v * b, 2, size)
    if p.flip is not None:
        flip = torch.stack((image_major(p.flip), torch.zeros_like(p.flip)), dim=1).unsqueeze(2)
        u = torch.where(flip, (size - 1) - u, u)
    source = torch.clamp(start + (u + 0.5) * (length / size) - 0.5, start, start + length - 1)
    # Normalised coordinates of grid_sample with align_corners=False.
    gx, gy = (2 * source + 1).view(b, v, 2, size).unbind(2)
    gx, gy = gx / width - 1, gy / height - 1
    grid = torch.stack((gx.unsqueeze(2).expand(b, v, size, size), gy.unsqueeze(3).expand(b, v, size, size)), dim=-1)
    out = F.grid_sample(x, grid.view(b, v * size, size, 2), mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(b, 3, v, size, size).transpose(0, 2).transpose(1, 2).reshape(v * b, 3, size, size)


def _color_jitter(views, p):
    """torchvision ``ColorJitter`` with per-view factors and order.

    Brightness, contrast and saturation are each ``_blend(img, other, f)`` = clamp(f img + (1 - f) other)
    with other = 0, the mean gray level or the gray image, so one position of the order is one pass over all
    views, with f = 1 where jitter is off or the position holds another op. Hue is not a blend; to compute it
    once per view without indexing a data-dependent subset at each position, the positions before each
    view's hue run first, then hue, then the positions after it."""
    n = views.shape[0]
    order = p.order
    if p.hue is None:
        positions = torch.arange(4, device=views.device)
        active = p.jitter.unsqueeze(1) & (order != 3)
    else:
        # Positions 0, 1, 2 before the hue, then 1, 2, 3 after it.
        slots = torch.arange(6, device=views.device)
        before = slots < 3
        positions = slots - 2 * ~before
        hue_position = (order == 3).to(torch.uint8).argmax(dim=1, keepdim=True)
        active = p.jitter.unsqueeze(1) & torch.where(before, positions < hue_position, positions > hue_position)
    ops = order[:, positions]
    ones = torch.ones(n, device=views.device, dtype=views.dtype)
    factors = torch.stack([ones if f is None else f.to(views.dtype) for f in (p.brightness, p.contrast, p.saturation)]
                          + [ones], dim=1)
    # Per position (rows) and view: f, and the weights (1 - f) of the gray image and of its mean.
    f = torch.where(active, factors.gather(1, ops), 1.0).t()
    saturate = ((1 - f) * (ops == 2).t()).view(-1, n, 1, 1)
    contrast = ((1 - f) * (ops == 1).t()).view(-1, n, 1, 1)
    f, idle = f.view(-1, n, 1, 1), (~active).t().view(-1, n, 1, 1)
    x = views.view(n, 3, -1)
    for k in range(positions.shape[0]):
        if p.hue is not None and k == 3:
            x = _where_views(p.jitter, _adjust_hue, x, p.hue.to(x.dtype))
        gray = _gray(x)
        other = torch.addcmul(contrast[k] * gray.mean(dim=2, keepdim=True), saturate[k], gray)
        x = _UnitClamp.apply(torch.addcmul(other, f[k], x), idle[k])
    return x.view_as(views)


def _adjust_hue(x, shift):
    """torchvision ``adjust_hue`` on x (N, 3, P) in [0, 1] with per-view shifts.

    Its rgb->hsv hue h in sixths of a turn, with its priority of red, then green, then blue as the maximum
    channel (as 0/1 weights: on CPUs, elementwise selection by a random mask is many times slower), then its
    hsv->rgb in closed form: channel = min + chroma * T(h + offset), offsets 5, 3, 1 for red, green, blue,
    T the trapezoid of period 6 that is 1 on [4, 6] and 0 on [1, 3]. T(k) = clamp(|3 - |k - 5|| - 1, 0, 1)
    for k in (-2, 12), which covers h + offset for h in [0, 6)."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(dim=1), x.amin(dim=1)
    chroma = maxc - minc
    # sign(c - max) + 1 is 1 where c is the maximum and 0 elsewhere: cheaper than comparing to booleans.
    peak = maxc.detach()
    is_r = (r.detach() - peak).sign_().add_(1)
    is_g = (g.detach() - peak).sign_().add_(1).mul_(1 - is_r)
    is_b = 1 - is_r - is_g
    numerator = torch.addcmul(torch.addcmul((r - g) * is_b, b - r, is_g), g - b, is_r)
    # Gray pixels have numerator 0, so any positive divisor gives them torchvision's hue 0.
    hue = numerator / chroma.clamp_min(torch.finfo(x.dtype).tiny) + 2 * is_g + 4 * is_b + 6 * shift.view(-1, 1)
    hue = torch.remainder(hue, 6)
    # The offsets less the 5 of T's formula; an explicit expand spares the CPU a slow broadcasting loop.
    offsets = -2 * torch.arange(3, device=x.device, dtype=x.dtype).view(1, 3, 1)
    trapezoid = (hue.unsqueeze(1).expand_as(x) + offsets).abs_().sub_(3).abs_().sub_(1).clamp_(0, 1)
    return trapezoid.mul_(chroma.unsqueeze(1)).add_(minc.unsqueeze(1))


def _gaussian_blur(x, sigma):
    """torchvision ``gaussian_blur(img, [k, k], [s, s])`` per view of x (N, 3, S, S), k = ``blur_kernel(S)``
    (13 at 32x32): the separable kernel with reflect padding folded into an S x S matrix K per view,
    out = K img K^T as two batched products."""
    n, c, s, _ = x.shape
    size = blur_kernel(s)
    half = size // 2
    taps = torch.arange(-half, half + 1, device=x.device)
    kernel = torch.exp(-0.5 * (taps.to(x.dtype) / sigma.to(x.dtype).unsqueeze(1)) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    # fold[t, i, j]: output pixel i takes tap t from pixel j, reflected at 0 and at s - 1.
    source = (s - 1) - ((s - 1) - (torch.arange(s, device=x.device) + taps.unsqueeze(1)).abs()).abs()
    fold = (source.unsqueeze(2) == torch.arange(s, device=x.device)).to(x.dtype)
    matrix = (kernel @ fold.view(size, s * s)).view(n, s, s)
    # Along the height with the channels side by side, then along the width; the result is (n, s, c, s).
    columns = torch.bmm(matrix, x.transpose(1, 2).reshape(n, s, c * s))
    out = torch.bmm(columns.view(n, s * c, s), matrix.transpose(1, 2))
    return out.view(n, s, c, s).transpose(1, 2).contiguous()
