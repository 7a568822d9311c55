import itertools
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import RandomResizedCrop

from augment import ViewParams, multiview, tensor_to_pil
from utils.engine.blocks import augment_for, reference_for

ALL_OFF = dict(flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)


@pytest.fixture(params=["gather", "select"])
def masked_views(request, monkeypatch):
    """Both ways of applying an op to a random subset of views: gathering the subset (CPU) and computing
    every view then selecting (other devices, where counting the subset would sync the host)."""
    monkeypatch.setitem(multiview._GATHER_MASKED_VIEWS, "cpu", request.param == "gather")


def make_image(b=1, h=32, w=32, seed=0, dtype=torch.float32):
    """Random colours plus the hard cases of hue and solarize: gray pixels, pure black and white, exact 0.5."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, h, w, generator=g, dtype=dtype)
    x[:, :, 0, :4] = torch.tensor([0.3, 0.0, 1.0, 0.5], dtype=dtype)
    x[:, 1, 1, :3] = 1.0
    x[:, 0, 2, :3] = 0.5
    return x


def boxes_params(boxes, **fields):
    t = torch.tensor(boxes, dtype=torch.long)
    return ViewParams(top=t[:, 0], left=t[:, 1], height=t[:, 2], width=t[:, 3], **fields)


def full_params(n, h=32, w=32, **fields):
    return boxes_params([(0, 0, h, w)] * n, **fields)


def jitter_params(n, brightness=None, contrast=None, saturation=None, hue=None, order=(0, 1, 2, 3)):
    def column(v):
        return None if v is None else torch.as_tensor(v, dtype=torch.float32).expand(n).clone()
    return full_params(n, jitter=torch.ones(n, dtype=torch.bool), brightness=column(brightness),
                       contrast=column(contrast), saturation=column(saturation), hue=column(hue),
                       order=torch.as_tensor(order).expand(n, 4).clone())


def torchvision_view(x, p, n, size=32):
    """View n of ``params`` by torchvision's functional ops on one float image (the oracle)."""
    b = x.shape[0]
    img = TF.resized_crop(x[n % b], int(p.top[n]), int(p.left[n]), int(p.height[n]), int(p.width[n]), [size, size],
                          antialias=True)
    if p.flip is not None and p.flip[n]:
        img = TF.hflip(img)
    if p.jitter is not None and p.jitter[n]:
        ops = {0: (TF.adjust_brightness, p.brightness), 1: (TF.adjust_contrast, p.contrast),
               2: (TF.adjust_saturation, p.saturation), 3: (TF.adjust_hue, p.hue)}
        for op in p.order[n].tolist():
            fn, factor = ops[op]
            if factor is not None:
                img = fn(img, float(factor[n]))
    if p.grayscale is not None and p.grayscale[n]:
        img = TF.rgb_to_grayscale(img, num_output_channels=3)
    if p.blur is not None and p.blur[n]:
        taps = multiview.blur_kernel(size)
        img = TF.gaussian_blur(img, [taps, taps], [float(p.sigma[n])] * 2)
    if p.solarize is not None and p.solarize[n]:
        img = TF.solarize(img, 0.5)
    return img


def torchvision_views(x, p, size=32):
    return torch.stack([torchvision_view(x, p, n, size) for n in range(len(p))])


def ks_statistic(a, b):
    a, b = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    grid = np.concatenate([a, b])
    return np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b)).max()


def assert_same_distribution(a, b, alpha=1e-3):
    """Two-sample Kolmogorov-Smirnov test at level alpha (conservative for discrete values)."""
    n, m = len(a), len(b)
    critical = math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))
    stat = ks_statistic(a, b)
    assert stat < critical, f"KS statistic {stat:.4f} >= {critical:.4f}"


def assert_rate(mask, p, sigmas=5):
    n = mask.numel()
    rate = mask.float().mean().item()
    assert abs(rate - p) < sigmas * math.sqrt(p * (1 - p) / n) + 1e-12, f"rate {rate:.4f}, expected {p}"


# ----- each operation, with given parameters, equals torchvision's functional op ----------------------------
CROP_BOXES = [(0, 0, 32, 32), (0, 0, 9, 9), (23, 23, 9, 9), (5, 3, 20, 11), (10, 0, 13, 32), (0, 17, 32, 15),
              (8, 8, 16, 16), (1, 2, 30, 29)]


@pytest.mark.parametrize("flip", [False, True])
def test_resized_crop_and_flip_match_torchvision(flip):
    x = make_image()
    p = boxes_params(CROP_BOXES, flip=torch.full((len(CROP_BOXES),), flip))
    ours = augment_for(len(CROP_BOXES), "empssl", "crop").apply(x, p)
    for n, (top, left, h, w) in enumerate(CROP_BOXES):
        ref = TF.resized_crop(x[0], top, left, h, w, [32, 32], antialias=True)
        torch.testing.assert_close(ours[n], TF.hflip(ref) if flip else ref, atol=1e-5, rtol=0)


def test_resized_crop_on_a_non_square_image_and_another_output_size():
    x = make_image(2, h=40, w=48)
    boxes = [(0, 0, 24, 24), (16, 24, 24, 24), (3, 30, 10, 18), (39, 47, 1, 1)]
    p = boxes_params(boxes * 2, flip=torch.tensor([False, True, False, True] * 2))
    ours = augment_for(4, "empssl", "crop", size=24).apply(x, p)
    torch.testing.assert_close(ours, torchvision_views(x, p, size=24), atol=1e-5, rtol=0)


@pytest.mark.parametrize("op,factors", [("brightness", [0.0, 0.6, 1.0, 1.4, 2.5]),
                                        ("contrast", [0.0, 0.6, 1.0, 1.4, 2.5]),
                                        ("saturation", [0.0, 0.6, 1.0, 1.4, 2.5]),
                                        ("hue", [-0.5, -0.2, -0.05, 0.0, 0.1, 0.2, 0.5])])
def test_single_jitter_op_matches_torchvision(op, factors):
    x = make_image(seed=1)
    fns = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast,
           "saturation": TF.adjust_saturation, "hue": TF.adjust_hue}
    p = jitter_params(len(factors))
    setattr(p, op, torch.tensor(factors))
    ours = augment_for(len(factors), "empssl", "crop").apply(x, p)
    for n, f in enumerate(factors):
        torch.testing.assert_close(ours[n], fns[op](x[0], f), atol=1e-4 if op == "hue" else 1e-5, rtol=0)


def test_jitter_off_leaves_views_alone():
    x = make_image(seed=2)
    p = jitter_params(2, 1.4, 0.6, 0.0, 0.2)
    p.jitter = torch.tensor([False, True])
    ours = augment_for(2, "empssl", "crop").apply(x, p)
    torch.testing.assert_close(ours[0], x[0], atol=0, rtol=0)
    assert (ours[1] - x[0]).abs().max() > 0.1


@pytest.mark.parametrize("first,second,factors", [(0, 1, dict(brightness=1.4, contrast=0.5)),
                                                  (2, 3, dict(saturation=1.8, hue=0.3)),
                                                  (3, 1, dict(hue=-0.25, contrast=1.5))])
def test_jitter_order_is_respected(first, second, factors):
    x = make_image(seed=3)
    rest = [k for k in range(4) if k not in (first, second)]
    orders = [(first, second, *rest), (second, first, *rest)]
    aug = augment_for(1, "empssl", "crop")
    outs = []
    for order in orders:
        p = jitter_params(1, order=order, **factors)
        out = aug.apply(x, p)
        torch.testing.assert_close(out, torchvision_views(x, p), atol=1e-4, rtol=0)
        outs.append(out)
    assert (outs[0] - outs[1]).abs().max() > 1e-2


def test_all_four_jitter_ops_in_every_order_match_torchvision():
    x = make_image(seed=4)
    orders = torch.tensor([list(p) for p in itertools.permutations(range(4))])
    g = torch.Generator().manual_seed(0)
    n = len(orders)
    p = full_params(n, jitter=torch.ones(n, dtype=torch.bool), order=orders,
                    brightness=0.6 + 0.8 * torch.rand(n, generator=g), contrast=0.6 + 0.8 * torch.rand(n, generator=g),
                    saturation=0.6 + 0.8 * torch.rand(n, generator=g), hue=0.4 * torch.rand(n, generator=g) - 0.2)
    ours = augment_for(n, "empssl", "crop").apply(x, p)
    torch.testing.assert_close(ours, torchvision_views(x, p), atol=1e-4, rtol=0)


def test_grayscale_matches_torchvision():
    x = make_image(seed=5)
    p = full_params(2, grayscale=torch.tensor([True, False]))
    ours = augment_for(2, "empssl", "crop").apply(x, p)
    torch.testing.assert_close(ours[0], TF.rgb_to_grayscale(x[0], num_output_channels=3), atol=1e-6, rtol=0)
    torch.testing.assert_close(ours[1], x[0], atol=0, rtol=0)


@pytest.mark.usefixtures("masked_views")
def test_gaussian_blur_matches_torchvision():
    x = make_image(seed=6)
    sigmas = [0.1, 0.3, 0.5, 1.0, 1.7, 2.0, 1.0]
    n = len(sigmas)
    p = full_params(n, blur=torch.tensor([True] * (n - 1) + [False]), sigma=torch.tensor(sigmas))
    ours = augment_for(n, "empssl", "crop").apply(x, p)
    for k, s in enumerate(sigmas[:-1]):
        torch.testing.assert_close(ours[k], TF.gaussian_blur(x[0], [13, 13], [s, s]), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[-1], x[0], atol=0, rtol=0)


def test_solarize_matches_torchvision():
    x = make_image(seed=7)
    assert (x == 0.5).any()
    p = full_params(2, solarize=torch.tensor([True, False]))
    ours = augment_for(2, "empssl", "crop").apply(x, p)
    torch.testing.assert_close(ours[0], TF.solarize(x[0], 0.5), atol=0, rtol=0)
    torch.testing.assert_close(ours[1], x[0], atol=0, rtol=0)


@pytest.mark.usefixtures("masked_views")
@pytest.mark.parametrize("method,preset,size", [("empssl", "crop", 32), ("empssl", "patch", 32), ("simclr", "crop", 32),
                                                ("empssl", "crop", 64), ("empssl", "patch", 96)])
def test_whole_pipeline_with_random_params_matches_torchvision(method, preset, size):
    """At any image size, with views as large as the image (the default) and the blur's taps scaled with it."""
    x = make_image(3, h=size, w=size, seed=8)
    aug = augment_for(8, method, preset, size=size,
                      **({"blur_p": 0.5, "solarize_p": 0.5} if method == "empssl" else {}))
    p = aug.sample_params(3, "cpu", generator=torch.Generator().manual_seed(1), image_size=(size, size))
    torch.testing.assert_close(aug.apply(x, p), torchvision_views(x, p, size), atol=1e-4, rtol=0)


def test_presets_are_fractions_of_the_image_and_the_blur_keeps_its_13_taps_at_32():
    assert [multiview.blur_kernel(s) for s in (32, 64, 96, 224)] == [13, 27, 39, 91]
    for side in (32, 96):
        p = augment_for(16, "empssl", "patch", size=side).sample_params(50, "cpu", image_size=(side, side))
        assert (p.height == side // 2).all() and (p.width == side // 2).all()
        crop = augment_for(16, "empssl", "crop", size=side).sample_params(500, "cpu", image_size=(side, side))
        area = (crop.height * crop.width).double() / side**2
        assert area.min() >= 0.07 and area.max() <= 1


# Sums of the 48 views (and of the views weighted by their row) that the views of 32x32 images had before the
# presets became fractions of the image (measured with that version's code, bit-identical then on one CPU).
VIEWS_BEFORE_FRACTIONS = {("empssl", "crop"): (68912.34599638873, 1604031.1190501628),
                          ("empssl", "patch"): (69050.53957627127, 1602673.3170431582),
                          ("simclr", "crop"): (71664.44986687432, 1669470.8791748744)}


@pytest.mark.parametrize("method,preset", sorted(VIEWS_BEFORE_FRACTIONS))
def test_32x32_views_are_those_of_the_version_before_views_were_fractions_of_the_image(method, preset):
    images = torch.randint(0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    views = augment_for(16, method, preset)(images, generator=torch.Generator().manual_seed(11)).double()
    rows = torch.arange(len(views), dtype=torch.float64).view(-1, 1, 1, 1)
    total, weighted = VIEWS_BEFORE_FRACTIONS[method, preset]
    assert views.sum().item() == pytest.approx(total, rel=1e-6)
    assert (views * rows).sum().item() == pytest.approx(weighted, rel=1e-6)


# ----- the random parameters follow torchvision's distributions ---------------------------------------------
@pytest.mark.parametrize("scale,ratio,size", [((0.08, 1.0), (3 / 4, 4 / 3), (32, 32)),
                                              ((0.5, 1.0), (0.25, 4.0), (32, 32)),
                                              ((0.08, 1.0), (3 / 4, 4 / 3), (24, 40))])
def test_crop_boxes_follow_torchvision_random_resized_crop(scale, ratio, size):
    n = 4000
    aug = augment_for(4, "empssl", "crop", scale=scale, ratio=ratio)
    p = aug.sample_params(n // 4, "cpu", generator=torch.Generator().manual_seed(2), image_size=size)
    torch.manual_seed(3)
    image = torch.empty(3, *size)
    ref = np.array([RandomResizedCrop.get_params(image, list(scale), list(ratio)) for _ in range(n)], dtype=np.float64)
    top, left, h, w = (t.numpy().astype(np.float64) for t in (p.top, p.left, p.height, p.width))
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= size[0]).all() and (left + w <= size[1]).all()
    area = size[0] * size[1]
    assert_same_distribution(h * w / area, ref[:, 2] * ref[:, 3] / area)
    assert_same_distribution(w / h, ref[:, 3] / ref[:, 2])
    assert_same_distribution(top, ref[:, 0])
    assert_same_distribution(left, ref[:, 1])


def test_crop_falls_back_to_torchvision_centre_crop():
    # Every attempt is wider than the image, so each box is the fallback: width 32, height 32 / 2, centred.
    aug = augment_for(2, "empssl", "crop", scale=(0.9, 1.0), ratio=(2.0, 3.0))
    p = aug.sample_params(50, "cpu")
    expected = RandomResizedCrop.get_params(torch.empty(3, 32, 32), [0.9, 1.0], [2.0, 3.0])
    assert expected == (8, 0, 16, 32)
    for field, value in zip(("top", "left", "height", "width"), expected):
        assert (getattr(p, field) == value).all()


def test_patch_preset_cuts_exact_16x16_patches_everywhere():
    aug = augment_for(16, "empssl", "patch")
    p = aug.sample_params(250, "cpu", generator=torch.Generator().manual_seed(4))
    assert (p.height == 16).all() and (p.width == 16).all()
    assert p.top.min() == 0 and p.top.max() == 16 and p.left.min() == 0 and p.left.max() == 16
    assert len(torch.unique(p.top * 17 + p.left)) == 17 * 17
    x = make_image(250, seed=9)
    views = augment_for(16, "empssl", "patch", **ALL_OFF).apply(x, ViewParams(p.top, p.left, p.height, p.width))
    n = 37
    i = n % 250
    ref = TF.resize(x[i, :, p.top[n]:p.top[n] + 16, p.left[n]:p.left[n] + 16], [32, 32], antialias=True)
    torch.testing.assert_close(views[n], ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["empssl", "simclr"])
def test_per_view_rates_and_factor_ranges(method):
    aug = augment_for(8, method, "crop")
    p = aug.sample_params(1000, "cpu", generator=torch.Generator().manual_seed(5))
    assert_rate(p.flip, 0.5)
    assert_rate(p.jitter, 0.8)
    assert_rate(p.grayscale, 0.2)
    max_hue = 0.2 if method == "empssl" else 0.1
    for name, (lo, hi) in {"brightness": (0.6, 1.4), "contrast": (0.6, 1.4), "saturation": (0.6, 1.4),
                           "hue": (-max_hue, max_hue)}.items():
        f = getattr(p, name)
        assert lo <= f.min() and f.max() <= hi
        assert f.min() < lo + 0.01 * (hi - lo) and f.max() > hi - 0.01 * (hi - lo)
        assert abs(f.mean().item() - (lo + hi) / 2) < 0.01 * (hi - lo)
    assert (p.order.sort(dim=1).values == torch.arange(4)).all()
    counts = torch.bincount(p.order @ torch.tensor([64, 16, 4, 1]), minlength=256)
    perms = counts[counts > 0]
    assert len(perms) == 24
    expected = len(p.order) / 24
    assert (perms.float() - expected).abs().max() < 5 * math.sqrt(expected)
    if method == "empssl":
        assert_rate(p.blur, 0.1)
        assert_rate(p.solarize, 0.1)
        assert 0.1 <= p.sigma.min() and p.sigma.max() <= 2.0 and abs(p.sigma.mean().item() - 1.05) < 0.03
    else:
        assert p.blur is None and p.solarize is None


def test_pixels_follow_the_reference_pipeline():
    """End to end against torchvision's PIL pipeline: statistics of the pixels of many views of one mostly
    red image (so that hue shifts show in green minus blue), compared by KS tests (PIL rounds to uint8 after
    each step, far below sampling error)."""
    n = 1000
    g = torch.Generator().manual_seed(6)
    ramp = torch.linspace(0, 1, 32)
    image = torch.stack([0.5 + 0.5 * ramp.outer(torch.ones(32)), 0.3 * torch.ones(32).outer(ramp),
                         0.3 * torch.rand(32, 32, generator=g)])
    image = (image * 255).round().to(torch.uint8)
    fast = augment_for(n, "empssl", "crop")(image[None], generator=g)
    torch.manual_seed(7)
    ref = reference_for(n, "empssl", "crop")(tensor_to_pil(image))
    assert ref.shape == fast.shape == (n, 3, 32, 32) and ref.dtype == fast.dtype == torch.float32
    for stat in (lambda v: v.mean(dim=(1, 2, 3)), lambda v: v.std(dim=(1, 2, 3)),
                 lambda v: v[:, 1].mean(dim=(1, 2)) - v[:, 2].mean(dim=(1, 2)),
                 lambda v: v.amax(dim=1).mean(dim=(1, 2)), lambda v: v.amin(dim=1).mean(dim=(1, 2))):
        assert_same_distribution(stat(fast).numpy(), stat(ref).numpy())


# ----- interface ------------------------------------------------------------------------------------------------
def test_output_shape_dtype_range_and_view_major_order():
    b, v = 5, 3
    x = (make_image(b, seed=10) * 255).round().to(torch.uint8)
    out = augment_for(v, "empssl", "crop")(x)
    assert out.shape == (v * b, 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    # One box per view index, shared by all images: row v * B + i must be image i in box v.
    boxes = [(0, 0, 16, 16), (4, 10, 20, 12), (16, 16, 16, 16)]
    p = boxes_params([box for box in boxes for _ in range(b)])
    out = augment_for(v, "empssl", "crop", **ALL_OFF).apply(x, p)
    for k, (top, left, h, w) in enumerate(boxes):
        for i in range(b):
            ref = TF.resized_crop(x[i].float() / 255, top, left, h, w, [32, 32], antialias=True)
            torch.testing.assert_close(out[k * b + i], ref, atol=1e-5, rtol=0)


def test_uint8_and_float_inputs_agree():
    x = (make_image(4, seed=11) * 255).round().to(torch.uint8)
    aug = augment_for(4, "empssl", "crop")
    a = aug(x, generator=torch.Generator().manual_seed(8))
    b = aug(x.float() / 255, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_generator_reproducible_and_call_equals_sample_then_apply():
    x = make_image(4, seed=12)
    aug = augment_for(4, "empssl", "crop")
    a = aug(x, generator=torch.Generator().manual_seed(9))
    b = aug(x, generator=torch.Generator().manual_seed(9))
    c = aug(x, generator=torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(11)
    d = aug(x)
    torch.manual_seed(11)
    e = aug.apply(x, aug.sample_params(x.shape[0], x.device))
    assert torch.equal(d, e)


@pytest.mark.usefixtures("masked_views")
def test_gradient_matches_torchvision_composition():
    # Interior pixels only: torchvision's hsv->rgb clamps its intermediate values, which zeroes the gradient
    # of pixels with a channel exactly on 0 or 1, where ours keeps the derivative of the hue map.
    x = 0.02 + 0.96 * torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(13))
    aug = augment_for(6, "empssl", "crop", blur_p=0.5, solarize_p=0.5)
    p = aug.sample_params(2, "cpu", generator=torch.Generator().manual_seed(12))
    weights = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(13))
    ours, ref = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (aug.apply(ours, p) * weights).sum().backward()
    (torchvision_views(ref, p) * weights).sum().backward()
    assert (ours.grad != 0).float().mean() > 0.5
    torch.testing.assert_close(ours.grad, ref.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.usefixtures("masked_views")
def test_steps_left_off_keep_the_gradient_at_pixels_on_0_and_1():
    x = (make_image(2, seed=14) * 4).round() / 4
    assert (x == 0).float().mean() > 0.1 and (x == 1).float().mean() > 0.1
    aug = augment_for(3, "empssl", "crop", blur_p=0.5, solarize_p=0.5)
    p = aug.sample_params(2, "cpu", generator=torch.Generator().manual_seed(14))
    crop_only = ViewParams(p.top, p.left, p.height, p.width, flip=p.flip)
    for field in ("jitter", "grayscale", "blur", "solarize"):
        setattr(p, field, torch.zeros_like(getattr(p, field)))
    weights = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(15))
    grads = []
    for params in (p, crop_only):
        xg = x.clone().requires_grad_(True)
        (aug.apply(xg, params) * weights).sum().backward()
        grads.append(xg.grad)
    assert grads[1].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kwargs", [{}, ALL_OFF, dict(grayscale_p=0.0, blur_p=0.0, solarize_p=0.0),
                                    dict(jitter=(0.4, 0.4, 0.4, 0.0)), dict(jitter_p=1.0, blur_p=1.0, solarize_p=1.0)])
@pytest.mark.parametrize("b,v", [(1, 1), (3, 2)])
def test_backward_and_range_for_any_set_of_steps(kwargs, b, v):
    x = make_image(b, seed=15).requires_grad_(True)
    out = augment_for(v, "empssl", "crop", **kwargs)(x, generator=torch.Generator().manual_seed(16))
    assert out.shape == (v * b, 3, 32, 32) and 0 <= out.min() and out.max() <= 1
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_params_with_fields_off_and_validation():
    x = make_image(seed=14)
    aug = augment_for(1, "simclr", "crop")
    torch.testing.assert_close(aug.apply(x, full_params(1)), x, atol=0, rtol=0)
    with pytest.raises(ValueError, match="expected images"):
        aug.apply(x[0], full_params(1))
    with pytest.raises(ValueError, match="do not split over a batch"):
        aug.apply(make_image(2), full_params(3))
    for bad, message in ((dict(method="byol"), "unknown method"), (dict(preset="tiles"), "unknown preset"),
                         (dict(scale=(0.5, 0.2)), "scale must be"), (dict(jitter=(0.4, 0.4, 0.4, 0.7)), "jitter must"),
                         (dict(grayscale_p=1.5), "grayscale_p must be a probability"),
                         (dict(size=0), "must be positive")):
        kwargs = {"method": "empssl", "preset": "crop", **bad}
        with pytest.raises(ValueError, match=message):
            augment_for(2, kwargs.pop("method"), kwargs.pop("preset"), **kwargs)


def test_reference_pipeline_output_and_pil_helper():
    x = (make_image(seed=15) * 255).round().to(torch.uint8)[0]
    image = tensor_to_pil(x)
    assert torch.equal(TF.pil_to_tensor(image), x)
    views = reference_for(5, "simclr", "patch")(image)
    assert views.shape == (5, 3, 32, 32) and views.dtype == torch.float32
    assert 0 <= views.min() and views.max() <= 1 and not torch.equal(views[0], views[1])
    with pytest.raises(ValueError):
        tensor_to_pil(x.float())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_runs_without_host_sync_and_matches_cpu():
    x = (make_image(8, seed=16) * 255).round().to(torch.uint8)
    aug = augment_for(16, "empssl", "crop", blur_p=0.5, solarize_p=0.5)
    xc = x.cuda()
    aug(xc)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        p = aug.sample_params(8, xc.device, generator=torch.Generator("cuda").manual_seed(0))
        out = aug.apply(xc, p)
        xf = (xc.float() / 255).requires_grad_(True)
        aug.apply(xf, p).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.testing.assert_close(out.cpu(), aug.apply(x, p.to("cpu")), atol=1e-5, rtol=0)


def test_repeat_images_gives_every_image_of_a_batch_the_views_it_gets_alone():
    aug = augment_for(3, "empssl", "crop", blur_p=0.5, solarize_p=0.5)
    views = aug.sample_params(1, "cpu", generator=torch.Generator().manual_seed(0))
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    batch = aug.apply(x, views.repeat_images(5)).view(3, 5, 3, 32, 32)  # view-major: row v * 5 + i
    for i in range(5):
        torch.testing.assert_close(batch[:, i], aug.apply(x[i: i + 1], views), rtol=0, atol=1e-6)
