"""Batched augmentation: per-sample parameters, their distributions, each op vs torchvision, determinism."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from bsstudy.config import compose
from bsstudy.data import augment as A
from bsstudy.errors import UserError

ATOL = 1e-5


def _cfg(dataset: str):
    return compose([f"dataset={dataset}"]).dataset


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(b: int, c: int, s: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, s, s, generator=_gen(seed))


# ---------------------------------------------------------------- parameters


def test_crop_boxes_within_bounds_and_distribution():
    n, h, w = 20000, 32, 32
    scale, ratio = (0.2, 1.0), (0.75, 4 / 3)
    top, left, hh, ww = A.sample_crop_boxes(n, h, w, scale, ratio, _gen(1))
    assert (hh >= 1).all() and (ww >= 1).all() and (top >= 0).all() and (left >= 0).all()
    assert (top + hh <= h).all() and (left + ww <= w).all()
    area = (hh * ww).double() / (h * w)
    aspect = ww.double() / hh.double()
    # Rounding to whole pixels widens the range by at most half a pixel per side.
    assert area.min() >= scale[0] - 2.5 / 32 and area.max() <= 1.0
    assert aspect.min() >= ratio[0] * (1 - 2 / 16) and aspect.max() <= ratio[1] * (1 + 2 / 16)
    # Accepted samples are ~uniform in area on [0.2, 1] (only large areas ever get rejected): mean near 0.6.
    assert abs(area.mean().item() - 0.6) < 0.05
    # log-aspect roughly symmetric about 0 for a symmetric ratio range.
    assert abs(torch.log(aspect).mean().item()) < 0.03
    # Offsets cover the whole admissible range.
    # Offsets are uniform over the whole admissible range [0, H - h]: every value occurs.
    sel = hh == 20
    assert set(top[sel].tolist()) == set(range(h - 20 + 1))


def test_crop_fallback_is_centre_crop():
    # A scale range no crop can satisfy (area > image) forces torchvision's fallback.
    top, left, hh, ww = A.sample_crop_boxes(50, 20, 40, (1.0, 1.0), (0.5, 0.6), _gen(2))
    # in_ratio = 2 > 0.6: full height, width = round(20 * 0.6) = 12, centred.
    assert (hh == 20).all() and (ww == 12).all() and (top == 0).all() and (left == 14).all()


def test_params_differ_across_samples_and_follow_probabilities():
    cfg = A.ViewConfig.from_cfg(_cfg("cifar10").augment.view2, "view2")
    p = A.sample_view_params(cfg, 4000, 32, 32, _gen(3))
    for name in ("top", "left", "height", "width", "brightness", "contrast", "saturation", "hue", "sigma"):
        v = getattr(p, name)
        assert v.shape == (4000,) and torch.unique(v).numel() > 10, name
    for name, prob in (("flip", 0.5), ("jitter", 0.8), ("gray", 0.2), ("solarize", 0.2), ("blur", 0.0)):
        frac = getattr(p, name).float().mean().item()
        assert abs(frac - prob) < 0.03, (name, frac)
    assert p.brightness.min() >= 0.6 and p.brightness.max() <= 1.4
    assert p.saturation.min() >= 0.8 and p.saturation.max() <= 1.2
    assert p.hue.abs().max() <= 0.1
    assert p.sigma.min() >= 0.1 and p.sigma.max() <= 2.0


def test_jitter_order_is_a_uniform_random_permutation_per_sample():
    cfg = A.ViewConfig.from_cfg(_cfg("cifar10").augment.view1, "view1")
    p = A.sample_view_params(cfg, 24000, 32, 32, _gen(30))
    assert p.order.shape == (24000, 4)
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(24000, 4))  # permutations
    # each of the 24 orders ~1/24, each op at each slot ~1/4
    codes = (p.order * torch.tensor([64, 16, 4, 1])).sum(1)
    freq = torch.unique(codes, return_counts=True)[1].float() / 24000
    assert len(freq) == 24 and (freq - 1 / 24).abs().max() < 0.01
    for slot in range(4):
        share = torch.bincount(p.order[:, slot], minlength=4).float() / 24000
        assert (share - 0.25).abs().max() < 0.015


def test_jitter_order_changes_the_result():
    """Contrast then brightness is not brightness then contrast: the order must reach the pixels."""
    x = _images(2, 3, 16, seed=31).repeat(2, 1, 1, 1)
    cfg = A.ViewConfig.from_cfg(_cfg("cifar10").augment.view1, "view1")
    p = A.sample_view_params(cfg, 4, 16, 16, _gen(32))
    p.jitter[:] = True
    p.brightness[:], p.contrast[:], p.saturation[:], p.hue[:] = 1.4, 0.5, 1.0, 0.0
    p.order[:2] = torch.tensor([0, 1, 2, 3])
    p.order[2:] = torch.tensor([1, 0, 2, 3])
    p.top[:], p.left[:], p.height[:], p.width[:], p.flip[:] = 0, 0, 16, 16, False
    p.gray[:], p.blur[:], p.solarize[:] = False, False, False
    y = A.apply_view(x, p, (16, 16), 3)
    for i in range(4):
        r = x[i]
        for op in p.order[i].tolist()[:2]:
            name = A.JITTER_OPS[op]
            r = getattr(TF, f"adjust_{name}")(r, float(getattr(p, name)[i]))
        torch.testing.assert_close(y[i], r, atol=ATOL, rtol=0)
    assert (y[:2] - y[2:]).abs().max() > 0.01


def test_views_differ_per_sample_and_between_views():
    cfg = _cfg("cifar10")
    x = (torch.rand(1, 3, 32, 32, generator=_gen(4)) * 255).to(torch.uint8).repeat(16, 1, 1, 1)
    v1, v2 = A.TwoViewAugment(cfg, "cpu")(x, _gen(5))
    assert v1.shape == v2.shape == (16, 3, 32, 32) and v1.dtype == torch.float32
    # Same image 16 times: every augmented copy must differ (independent per-sample parameters).
    flat = v1.flatten(1)
    d = torch.cdist(flat, flat)
    assert (d + torch.eye(16) * 1e9).min() > 1e-3
    assert (v1 - v2).flatten(1).norm(dim=1).min() > 1e-3


@pytest.mark.parametrize("dataset", ["cifar10", "fashion_mnist"])
def test_two_views_in_one_batch_equal_each_view_alone(dataset):
    """TwoViewAugment runs both views as one 2B batch; each half must be that view's own apply_view."""
    cfg = _cfg(dataset)
    aug = A.TwoViewAugment(cfg, "cpu")
    c, s = int(cfg.channels), int(cfg.image_size)
    x = (torch.rand(64, c, s, s, generator=_gen(20)) * 255).to(torch.uint8)
    v1, v2 = aug(x, _gen(21))
    p1, p2 = aug.sample(64, s, s, _gen(21))
    for v, p, vc in ((v1, p1, aug.views[0]), (v2, p2, aug.views[1])):
        ref = A.apply_view(x.float() / 255, p, (s, s), A.blur_kernel_size(vc.blur_sigma[1], s, s))
        torch.testing.assert_close(v, (ref - aug.mean) / aug.std, atol=1e-5, rtol=0)


def test_determinism_given_seed():
    cfg = _cfg("fashion_mnist")
    aug = A.TwoViewAugment(cfg, "cpu")
    x = (torch.rand(32, 1, 28, 28, generator=_gen(6)) * 255).to(torch.uint8)
    a1, a2 = aug(x, _gen(7))
    b1, b2 = aug(x, _gen(7))
    c1, _ = aug(x, _gen(8))
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, c1)


# ---------------------------------------------------------------- each op vs torchvision, one image at a time


def test_resized_crop_and_flip_match_torchvision():
    x = _images(12, 3, 32)
    top, left, h, w = A.sample_crop_boxes(12, 32, 32, (0.08, 1.0), (0.75, 4 / 3), _gen(9))
    flip = torch.arange(12) % 2 == 0
    y = A.resized_crop_flip(x, top, left, h, w, flip, (32, 32))
    for i in range(12):
        ref = TF.resized_crop(x[i], int(top[i]), int(left[i]), int(h[i]), int(w[i]), [32, 32], antialias=True)
        if flip[i]:
            ref = TF.horizontal_flip(ref)
        torch.testing.assert_close(y[i], ref, atol=ATOL, rtol=0)


def test_resized_crop_to_other_output_size_matches_torchvision():
    x = _images(4, 1, 28)
    top, left, h, w = (torch.tensor(v) for v in ([0, 3, 5, 10], [0, 2, 7, 1], [28, 20, 9, 18], [28, 25, 14, 5]))
    y = A.resized_crop_flip(x, top, left, h, w, torch.zeros(4, dtype=torch.bool), (40, 36))
    for i in range(4):
        ref = TF.resized_crop(x[i], int(top[i]), int(left[i]), int(h[i]), int(w[i]), [40, 36], antialias=False)
        torch.testing.assert_close(y[i], ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("op", ["brightness", "contrast", "saturation"])
def test_colour_ops_match_torchvision(op, channels):
    x = _images(8, channels, 16, seed=10)
    f = torch.linspace(0.0, 2.0, 8)
    ours = getattr(A, f"adjust_{op}")(x.clone(), f)
    ref_fn = getattr(TF, f"adjust_{op}")
    for i in range(8):
        torch.testing.assert_close(ours[i], ref_fn(x[i], float(f[i])), atol=ATOL, rtol=0)


def test_hue_matches_torchvision():
    x = _images(9, 3, 16, seed=11)
    x[0] = 0.5  # gray image: hue undefined, must stay unchanged
    shift = torch.linspace(-0.5, 0.5, 9)
    ours = A.adjust_hue(x, shift)
    for i in range(9):
        torch.testing.assert_close(ours[i], TF.adjust_hue(x[i], float(shift[i])), atol=ATOL, rtol=0)


def test_hue_matches_torchvision_on_ties():
    # uint8-valued pixels with the max shared by two or three channels (sector boundaries, gray and white
    # pixels): the sector masks and the max == min guard must give torchvision's values there
    g = torch.Generator().manual_seed(13)
    x = torch.randint(0, 256, (12, 3, 8, 8), generator=g).float() / 255
    x[0:3, 1] = x[0:3, 0]          # r == g
    x[3:6, 2] = x[3:6, 1]          # g == b
    x[6:9, 2] = x[6:9, 0]          # r == b
    x[9:12, 1:] = x[9:12, :1]      # r == g == b (gray)
    x[::3, :, 0, 0] = 1.0          # saturated white pixel
    shift = torch.linspace(-0.5, 0.5, 12)
    ours = A.adjust_hue(x, shift)
    for i in range(12):
        torch.testing.assert_close(ours[i], TF.adjust_hue(x[i], float(shift[i])), atol=ATOL, rtol=0)


def test_grayscale_and_solarize_match_torchvision():
    x = _images(4, 3, 16, seed=12)
    g = A.rgb_to_grayscale(x)
    s = A.solarize(x)
    for i in range(4):
        torch.testing.assert_close(g[i], TF.rgb_to_grayscale(x[i]), atol=ATOL, rtol=0)
        torch.testing.assert_close(s[i], TF.solarize(x[i], A.SOLARIZE_THRESHOLD), atol=0, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_gaussian_blur_per_sample_sigma_matches_torchvision(channels):
    x = _images(6, channels, 24, seed=13)
    sigma = torch.tensor([0.1, 0.4, 0.8, 1.2, 1.6, 2.0])
    k = A.blur_kernel_size(2.0, 24, 24)
    assert k == 13
    ours = A.gaussian_blur(x, sigma, k)
    for i in range(6):
        ref = TF.gaussian_blur(x[i], [k, k], [float(sigma[i])] * 2)
        torch.testing.assert_close(ours[i], ref, atol=ATOL, rtol=0)


def test_full_view_matches_torchvision_composition():
    """apply_view == crop -> flip -> jitter (b, c, s, h in the sample's order) -> gray -> blur -> solarize."""
    cfg = A.ViewConfig.from_cfg(_cfg("stl10").augment.view2, "view2")
    cfg = A.ViewConfig(**{**cfg.__dict__, "blur_p": 0.5, "solarize_p": 0.5})
    x = _images(16, 3, 20, seed=14)
    p = A.sample_view_params(cfg, 16, 20, 20, _gen(15))
    k = A.blur_kernel_size(2.0, 20, 20)
    ours = A.apply_view(x, p, (20, 20), k)
    for i in range(16):
        r = TF.resized_crop(x[i], int(p.top[i]), int(p.left[i]), int(p.height[i]), int(p.width[i]), [20, 20])
        if p.flip[i]:
            r = TF.horizontal_flip(r)
        if p.jitter[i]:  # in the sample's own order, as ColorJitter
            for op in p.order[i].tolist():
                name = A.JITTER_OPS[op]
                r = getattr(TF, f"adjust_{name}")(r, float(getattr(p, name)[i]))
        if p.gray[i]:
            r = TF.rgb_to_grayscale(r, num_output_channels=3)
        if p.blur[i]:
            r = TF.gaussian_blur(r, [k, k], [float(p.sigma[i])] * 2)
        if p.solarize[i]:
            r = TF.solarize(r, A.SOLARIZE_THRESHOLD)
        # Solarize is discontinuous at the threshold; pixels within float noise of it may legitimately flip.
        close = (ours[i] - r).abs() < 1e-4
        assert close.float().mean() > 0.999, i


# ---------------------------------------------------------------- public API


def test_normalize_and_output_statistics():
    cfg = _cfg("fashion_mnist")
    x = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    y = A.normalize(x, cfg)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, torch.full_like(y, (1 - 0.2860) / 0.3530))


def test_output_size_follows_config_and_one_channel_path():
    cfg = _cfg("fashion_mnist")
    aug = A.TwoViewAugment(cfg, "cpu")
    x = (torch.rand(8, 1, 28, 28, generator=_gen(16)) * 255).to(torch.uint8)
    v1, v2 = aug(x, _gen(17))
    assert v1.shape == v2.shape == (8, 1, 28, 28)
    assert torch.isfinite(v1).all() and torch.isfinite(v2).all()
    lo, hi = (0 - 0.2860) / 0.3530, (1 - 0.2860) / 0.3530
    assert v1.min() >= lo - 1e-5 and v1.max() <= hi + 1e-5


def test_bad_input_and_config_give_user_errors():
    cfg = _cfg("cifar10")
    aug = A.TwoViewAugment(cfg, "cpu")
    with pytest.raises(UserError, match="uint8"):
        aug(torch.zeros(2, 3, 32, 32), _gen())
    with pytest.raises(UserError, match="uint8"):
        aug(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), _gen())
    bad = dict(cfg.augment.view1)
    bad["crop_scale"] = [0.5, 0.1]
    with pytest.raises(UserError, match="crop_scale"):
        A.ViewConfig.from_cfg(bad, "view1")
    bad = dict(cfg.augment.view1)
    bad["jitter_p"] = 1.5
    with pytest.raises(UserError, match="jitter_p"):
        A.ViewConfig.from_cfg(bad, "view1")


def test_blur_kernel_fits_small_images():
    k = A.blur_kernel_size(5.0, 8, 8)
    assert k % 2 == 1 and (k - 1) // 2 < 8
    x = _images(2, 3, 8)
    assert A.gaussian_blur(x, torch.tensor([5.0, 1.0]), k).shape == x.shape
    assert math.isclose(A.gaussian_blur(torch.ones(1, 1, 8, 8), torch.tensor([3.0]), k).mean().item(), 1.0,
                        rel_tol=1e-5)
