"""Batched two-view SSL augmentation on the training device (no PIL, no workers, no per-sample Python).

Every sample of a batch gets its OWN random parameters, drawn as ``(B,)`` tensors from a caller-supplied
``torch.Generator``; the ops then run on the whole batch at once:

    random resized crop + horizontal flip   one bilinear grid_sample (per-sample separable grid)
    colour jitter (prob jitter_p)           brightness, contrast, saturation, hue in a random order per sample
    random grayscale                        ITU-R 601 weights, replicated to 3 channels
    Gaussian blur (per-sample sigma)        separable grouped convolution, reflect padding
    solarize                                x >= 0.5 -> 1 - x

Each op follows torchvision's functional semantics on float images in [0, 1] (tests compare them one
image at a time against ``torchvision.transforms.v2.functional``); like ``ColorJitter`` the four jitter
ops run in a random order drawn per sample. Parameters are drawn on the generator's device, so a CPU
generator gives the same parameters whether the images are on CPU or GPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from bsstudy.errors import UserError
from bsstudy.runtime import tune_malloc

# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale.
_GRAY = (0.2989, 0.587, 0.114)
SOLARIZE_THRESHOLD = 0.5  # on [0, 1] floats (torchvision's RandomSolarize(0.5) for float images)

_VIEW_KEYS = ("crop_scale", "crop_ratio", "hflip_p", "jitter_p", "brightness", "contrast", "saturation",
              "hue", "grayscale_p", "blur_p", "blur_sigma", "solarize_p")


def _get(cfg: Any, key: str) -> Any:
    """Read ``key`` from a dict-like or attribute config (OmegaConf DictConfig, dict, dataclass)."""
    if isinstance(cfg, Mapping):
        if key not in cfg:
            raise UserError(f"dataset config is missing key '{key}'")
        return cfg[key]
    if not hasattr(cfg, key):
        raise UserError(f"dataset config is missing key '{key}'")
    return getattr(cfg, key)


@dataclass(frozen=True)
class ViewConfig:
    """Augmentation settings of one view (``dataset.augment.view1`` / ``view2``)."""

    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    hflip_p: float
    jitter_p: float
    brightness: float
    contrast: float
    saturation: float
    hue: float
    grayscale_p: float
    blur_p: float
    blur_sigma: tuple[float, float]
    solarize_p: float

    @classmethod
    def from_cfg(cls, cfg: Any, name: str = "view") -> "ViewConfig":
        """Validate a view's config (one-line UserError naming the bad key)."""
        v = {k: _get(cfg, k) for k in _VIEW_KEYS}
        for k in ("crop_scale", "crop_ratio", "blur_sigma"):
            pair = tuple(float(a) for a in v[k])
            if len(pair) != 2 or not (0 < pair[0] <= pair[1]):
                raise UserError(f"augment.{name}.{k} must be [lo, hi] with 0 < lo <= hi, got {list(v[k])}")
            v[k] = pair
        if v["crop_scale"][1] > 1.0:
            raise UserError(f"augment.{name}.crop_scale must lie in (0, 1], got {list(v['crop_scale'])}")
        for k in ("hflip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            v[k] = float(v[k])
            if not 0.0 <= v[k] <= 1.0:
                raise UserError(f"augment.{name}.{k} must be a probability in [0, 1], got {v[k]}")
        for k in ("brightness", "contrast", "saturation"):
            v[k] = float(v[k])
            if v[k] < 0:
                raise UserError(f"augment.{name}.{k} must be >= 0, got {v[k]}")
        v["hue"] = float(v["hue"])
        if not 0.0 <= v["hue"] <= 0.5:
            raise UserError(f"augment.{name}.hue must lie in [0, 0.5], got {v['hue']}")
        return cls(**v)


JITTER_OPS = ("brightness", "contrast", "saturation", "hue")  # ViewParams.order indexes this


@dataclass
class ViewParams:
    """Per-sample parameters of one view; every field is a ``(B,)`` tensor, except ``order`` (B, 4)."""

    top: torch.Tensor        # int64 crop box in input pixels
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    flip: torch.Tensor       # bool
    jitter: torch.Tensor     # bool: colour jitter applied
    brightness: torch.Tensor  # float factors (1 = identity); only meaningful where jitter
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor        # float shift in [-0.5, 0.5]
    gray: torch.Tensor       # bool
    blur: torch.Tensor       # bool
    sigma: torch.Tensor      # float blur sigma
    solarize: torch.Tensor   # bool
    order: torch.Tensor      # (B, 4) int64: the jitter op at each of 4 slots (JITTER_OPS indices)

    def to(self, device: torch.device | str) -> "ViewParams":
        """Move all parameter tensors to ``device``."""
        return ViewParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @staticmethod
    def cat(params: "list[ViewParams]") -> "ViewParams":
        """Concatenate the parameters of several batches (sample order kept)."""
        return ViewParams(**{f.name: torch.cat([getattr(p, f.name) for p in params]) for f in fields(ViewParams)})


# ---------------------------------------------------------------- parameter sampling


def _uniform(lo: float, hi: float, n: int, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=g.device, dtype=torch.float64)


def sample_crop_boxes(n: int, height: int, width: int, scale: tuple[float, float],
                      ratio: tuple[float, float], g: torch.Generator, attempts: int = 10
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """RandomResizedCrop boxes ``(top, left, h, w)`` for ``n`` samples, torchvision's algorithm vectorised.

    Up to ``attempts`` candidates (area ~ U(scale) * H*W, log aspect ~ U(log ratio)) per sample; the first
    that fits is taken; samples with none fall back to a centre crop with the aspect clamped to ``ratio``.
    """
    area = height * width
    target = area * _uniform(scale[0], scale[1], n * attempts, g).view(n, attempts)
    log_r = _uniform(math.log(ratio[0]), math.log(ratio[1]), n * attempts, g).view(n, attempts)
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * aspect)).long()
    h = torch.round(torch.sqrt(target / aspect)).long()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    has = ok.any(dim=1)
    first = torch.argmax(ok.to(torch.int8), dim=1)  # index of the first valid attempt
    h_sel = h.gather(1, first[:, None]).squeeze(1)
    w_sel = w.gather(1, first[:, None]).squeeze(1)
    # Fallback (torchvision): centre crop, aspect clamped into the ratio range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fh, fw = height, int(round(height * ratio[1]))
    else:
        fw, fh = width, height
    h_sel = torch.where(has, h_sel, torch.full_like(h_sel, fh))
    w_sel = torch.where(has, w_sel, torch.full_like(w_sel, fw))
    # Uniform integer offsets in [0, H-h] and [0, W-w] (inclusive), as torch.randint(0, H-h+1).
    u = torch.rand(2, n, generator=g, device=g.device, dtype=torch.float64)
    top = torch.floor(u[0] * (height - h_sel + 1)).long().clamp_max(height - h_sel)
    left = torch.floor(u[1] * (width - w_sel + 1)).long().clamp_max(width - w_sel)
    top = torch.where(has, top, (height - h_sel) // 2)
    left = torch.where(has, left, (width - w_sel) // 2)
    return top, left, h_sel, w_sel


def sample_view_params(cfg: ViewConfig, n: int, height: int, width: int, g: torch.Generator) -> ViewParams:
    """Draw independent per-sample parameters of one view for a batch of ``n`` images of size HxW."""
    top, left, h, w = sample_crop_boxes(n, height, width, cfg.crop_scale, cfg.crop_ratio, g)

    def coin(p: float) -> torch.Tensor:
        return torch.rand(n, generator=g, device=g.device) < p

    def factor(s: float) -> torch.Tensor:
        return _uniform(max(0.0, 1.0 - s), 1.0 + s, n, g).float()

    return ViewParams(
        top=top, left=left, height=h, width=w,
        flip=coin(cfg.hflip_p),
        jitter=coin(cfg.jitter_p),
        brightness=factor(cfg.brightness),
        contrast=factor(cfg.contrast),
        saturation=factor(cfg.saturation),
        hue=_uniform(-cfg.hue, cfg.hue, n, g).float(),
        gray=coin(cfg.grayscale_p),
        blur=coin(cfg.blur_p),
        sigma=_uniform(cfg.blur_sigma[0], cfg.blur_sigma[1], n, g).float(),
        solarize=coin(cfg.solarize_p),
        # a random permutation per sample, as torchvision's ColorJitter draws one per call
        order=torch.argsort(torch.rand(n, len(JITTER_OPS), generator=g, device=g.device), dim=1),
    )


# ---------------------------------------------------------------- batched ops (float images in [0, 1])


def _source_coords(start: torch.Tensor, size: torch.Tensor, n_in: int, n_out: int,
                   flip: torch.Tensor | None) -> torch.Tensor:
    """(B, n_out) grid_sample coordinates resampling [start, start+size) to n_out pixels (align_corners=False).

    Source pixel coordinates are computed in float64 and clamped to the crop, like ``F.interpolate`` on the
    cropped image (so no pixel outside the crop ever gets weight); reversing the output axis implements a
    horizontal flip for free. Returned normalised to [-1, 1] as grid_sample expects.
    """
    x = torch.arange(n_out, device=start.device, dtype=torch.float64)
    s = size.to(torch.float64)[:, None]
    src = (x[None, :] + 0.5) * (s / n_out) - 0.5
    src = torch.minimum(src.clamp_min(0.0), s - 1)
    if flip is not None:
        src = torch.where(flip[:, None], src.flip(1), src)
    return ((src + start[:, None]) * (2.0 / n_in) + (1.0 / n_in - 1.0)).float()


def resized_crop_flip(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: torch.Tensor,
                      width: torch.Tensor, flip: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """Per-sample crop ``x[:, :, top:top+h, left:left+w]``, bilinear resize to ``out_size``, optional hflip.

    One ``grid_sample`` over the batch with a per-sample separable grid: 4 taps per output pixel, where
    a crop-resize matrix product would spend H+W multiply-adds (1.3-1.9x slower measured at 32x32).
    """
    _, _, h_in, w_in = x.shape
    gy = _source_coords(top, height, h_in, out_size[0], None)    # (B, Ho)
    gx = _source_coords(left, width, w_in, out_size[1], flip)    # (B, Wo)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (B, Ho, Wo, (x, y))
    # Coordinates never leave the crop, so the padding mode only matters for zero-weight neighbours.
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def _bcast(f: torch.Tensor) -> torch.Tensor:
    return f.view(-1, 1, 1, 1)


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) -> (B,1,H,W) luma."""
    r, g, b = x.unbind(1)
    return torch.add(r, g, alpha=_GRAY[1] / _GRAY[0]).add_(b, alpha=_GRAY[2] / _GRAY[0]).mul_(_GRAY[0]).unsqueeze(1)


def _mean_luma(x: torch.Tensor) -> torch.Tensor:
    """(B,1,1,1) mean luma: the weighted channel means (luma is linear), without forming the gray image."""
    m = x.mean(dim=(2, 3))
    if x.shape[1] == 3:
        m = m @ torch.tensor(_GRAY, dtype=x.dtype, device=x.device).view(3, 1)
    return m.view(-1, 1, 1, 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Per-sample brightness: ``clamp(f * x, 0, 1)``."""
    y = x if inplace else x.clone()
    return y.mul_(_bcast(factor)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Per-sample contrast: blend ``f * x + (1 - f) * mean_luma``, clamped (torchvision's blend)."""
    f = _bcast(factor)
    mean = _mean_luma(x).mul_(1.0 - f)
    y = x if inplace else x.clone()
    return y.mul_(f).add_(mean).clamp_(0.0, 1.0)  # (lerp_ against a broadcast scalar is ~4x slower on CPU)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Per-sample saturation: blend with the grayscale image (identity for 1 channel)."""
    if x.shape[1] != 3:
        return x if inplace else x.clone()
    gray = rgb_to_grayscale(x)
    y = x if inplace else x.clone()
    return y.lerp_(gray.expand_as(y), 1.0 - _bcast(factor)).clamp_(0.0, 1.0)


# Elementwise code avoids torch.where on image-sized tensors: its CPU kernel is not vectorised and costs
# many times a multiply. Masks are applied as 0/1 float factors instead (same values).


# n - 2 for the r, g, b channels of the six-sector table (see adjust_hue)
_HUE_OFFSETS = (3.0, 1.0, -1.0)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Per-sample hue rotation by ``shift`` (fraction of a turn); identity for 1 channel.

    torchvision's RGB -> HSV -> shift -> RGB round trip, fused: HSV's s and v enter the result only as
    v = max and v*s = max - min, so neither s nor the HSV stack is formed. The hue h is kept in sixths of a
    turn, and each output channel is the closed form of the six-sector (v, p, q, t) table,
    ``v - (v*s) * clamp(|m - 3| - 1, 0, 1)`` with ``m = (h + n - 2) mod 6``, n = 5, 3, 1 for r, g, b.
    Sector masks are 0/1 floats from ``sign`` (bool tensors and their conversions are slow on CPU).
    """
    if x.shape[1] != 3:
        return x
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    rng = maxc - torch.minimum(torch.minimum(r, g), b)
    # maxc - c >= 0, so sign() is exactly 1 where channel c is not the max and 0 where it is.
    not_r = torch.sign(maxc - r)
    blue = not_r * torch.sign(maxc - g)  # Pillow's / torchvision's convention: red wins ties, then green
    green = not_r - blue
    # hue in sixths: (g-b)/rng for a red max, 2 + (b-r)/rng for green, 4 + (r-g)/rng for blue.
    # torchvision divides by 1 where max == min; there the numerators are 0, so clamping gives the same 0.
    gb = g - b
    h = torch.addcmul(gb, green, (b - r).sub_(gb)).addcmul_(blue, (r - g).sub_(gb))
    h.div_(rng.clamp_min(torch.finfo(x.dtype).tiny))
    h.add_(not_r.add_(blue), alpha=2.0).add_(6.0 * shift.to(x.dtype).view(-1, 1, 1))  # + 2*green + 4*blue
    m = h.unsqueeze(1) + torch.tensor(_HUE_OFFSETS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    m.sub_(torch.floor(m * (1.0 / 6.0)), alpha=6.0)  # mod 6 (torch.remainder / fmod are slow on CPU)
    m.sub_(3.0).abs_().sub_(1.0).clamp_(0.0, 1.0)
    return torch.addcmul(maxc.unsqueeze(1), rng.unsqueeze(1), m, value=-1.0).clamp_(0.0, 1.0)


def blur_kernel_size(sigma_max: float, height: int, width: int) -> int:
    """Odd kernel covering +-3 sigma of the largest sigma, capped so reflect padding fits the image."""
    k = 2 * math.ceil(3.0 * sigma_max) + 1
    cap = 2 * (min(height, width) - 1) - 1  # (k-1)/2 < min(H, W) for reflect padding
    return max(3, min(k, cap if cap % 2 else cap - 1))


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Per-sample Gaussian blur with a ``kernel_size`` kernel and reflect padding (as torchvision)."""
    b, c, h, w = x.shape
    half = (kernel_size - 1) / 2
    t = torch.linspace(-half, half, kernel_size, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None, :] / sigma.to(x.dtype)[:, None]) ** 2)
    k = k / k.sum(dim=1, keepdim=True)                       # (B, K)
    k = k.repeat_interleave(c, dim=0)                        # (B*C, K): one filter per channel
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, kernel_size), groups=b * c)  # horizontal
    y = F.conv2d(y, k.view(b * c, 1, kernel_size, 1), groups=b * c)  # vertical
    return y.view(b, c, h, w)


def solarize(x: torch.Tensor, threshold: float = SOLARIZE_THRESHOLD) -> torch.Tensor:
    """Invert pixels at or above ``threshold`` (images in [0, 1])."""
    inv = 1.0 - x
    if threshold == 0.5:
        return torch.minimum(x, inv)  # for x in [0, 1]: x >= 0.5 exactly when 1 - x <= x
    return x + (inv - x) * (x >= threshold)


def _on_subset(y: torch.Tensor, mask: torch.Tensor, fn) -> torch.Tensor:
    """``y`` (modified in place) with ``fn`` applied to the samples where ``mask`` is set."""
    idx = mask.nonzero().squeeze(1)
    if idx.numel() == 0:
        return y
    return y.index_copy_(0, idx, fn(y.index_select(0, idx)).contiguous())


def _colour_jitter(y: torch.Tensor, p: ViewParams) -> torch.Tensor:
    """Brightness, contrast, saturation and hue on the samples with ``p.jitter``, each sample in its own
    order ``p.order`` (torchvision's ColorJitter). At each of the 4 slots the samples are grouped by the op
    they apply there, so every op runs once per slot on its group (16 calls per batch, not one per image).
    Samples whose factor is the identity (1, or a hue shift of 0) are skipped."""
    # (op, identity factor); the subset each op sees is a fresh copy, so the blends work in place
    adjust = {"brightness": (partial(adjust_brightness, inplace=True), 1.0),
              "contrast": (partial(adjust_contrast, inplace=True), 1.0),
              "saturation": (partial(adjust_saturation, inplace=True), 1.0), "hue": (adjust_hue, 0.0)}
    n_ops = len(JITTER_OPS) if y.shape[1] == 3 else 2  # saturation and hue are the identity on 1 channel
    for slot in range(len(JITTER_OPS)):
        at = p.order[:, slot]
        for op, name in enumerate(JITTER_OPS[:n_ops]):
            fn, identity = adjust[name]
            factor = getattr(p, name)
            mask = p.jitter & (at == op) & (factor != identity)
            y = _on_subset(y, mask, lambda t, f=fn, v=factor[mask]: f(t, v))
    return y


def apply_view(x: torch.Tensor, p: ViewParams, out_size: tuple[int, int], kernel_size: int) -> torch.Tensor:
    """Apply per-sample view parameters to float images ``x`` in [0, 1]; returns [0, 1] floats."""
    channels = x.shape[1]
    # y is our own fresh tensor from here on, so every op runs in place (allocations dominate on CPU).
    y = resized_crop_flip(x, p.top, p.left, p.height, p.width, p.flip, out_size).clamp_(0.0, 1.0)
    if bool(p.jitter.any()):
        y = _colour_jitter(y, p)
    # Ops applied to a minority of samples run on that subset only (cheaper than a masked blend of all).
    if channels == 3:
        y = _on_subset(y, p.gray, lambda t: rgb_to_grayscale(t).expand_as(t))
    y = _on_subset(y, p.blur, lambda t: gaussian_blur(t, p.sigma[p.blur], kernel_size))
    y = _on_subset(y, p.solarize, solarize)
    return y


# ---------------------------------------------------------------- public entry points


def _stats(dataset_cfg: Any, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor([float(m) for m in _get(dataset_cfg, "mean")], device=device).view(1, -1, 1, 1)
    std = torch.tensor([float(s) for s in _get(dataset_cfg, "std")], device=device).view(1, -1, 1, 1)
    if mean.shape != std.shape or (std <= 0).any():
        raise UserError("dataset.mean and dataset.std must have one entry per channel, std > 0")
    return mean, std


def normalize(x_uint8: torch.Tensor, dataset_cfg: Any) -> torch.Tensor:
    """Un-augmented network input: ``(x/255 - mean) / std`` as float32 (evaluation, feature extraction)."""
    mean, std = _stats(dataset_cfg, x_uint8.device)
    if x_uint8.shape[1] != mean.shape[1]:
        raise UserError(f"images have {x_uint8.shape[1]} channels but dataset.mean has {mean.shape[1]}")
    return (x_uint8.float() / 255.0 - mean) / std


class TwoViewAugment:
    """Two independently augmented, normalised views of a uint8 batch, on the batch's device.

    ``aug(x_uint8, generator) -> (view1, view2)``, float32 (B, C, S, S) with S = ``dataset.image_size``.
    Reproducible given the generator state; use a CPU generator for device-independent parameters.
    """

    def __init__(self, dataset_cfg: Any, device: torch.device | str) -> None:
        self.device = torch.device(device)
        if self.device.type == "cpu":
            # Batch-sized temporaries on every op: without it glibc page-faults them in afresh each time
            # (measured: 1.5x slower at B=256, 32x32 RGB). Process-wide, idempotent; see bsstudy.runtime.
            tune_malloc()
        self.channels = int(_get(dataset_cfg, "channels"))
        self.size = int(_get(dataset_cfg, "image_size"))
        aug = _get(dataset_cfg, "augment")
        self.views = (ViewConfig.from_cfg(_get(aug, "view1"), "view1"),
                      ViewConfig.from_cfg(_get(aug, "view2"), "view2"))
        self.mean, self.std = _stats(dataset_cfg, self.device)
        if self.mean.shape[1] != self.channels:
            raise UserError(f"dataset.mean has {self.mean.shape[1]} entries but dataset.channels is {self.channels}")

    def sample(self, n: int, height: int, width: int, g: torch.Generator) -> tuple[ViewParams, ViewParams]:
        """Per-sample parameters of both views (view 1 drawn first)."""
        return tuple(sample_view_params(v, n, height, width, g) for v in self.views)  # type: ignore[return-value]

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != self.channels:
            raise UserError(f"TwoViewAugment expects uint8 (B,{self.channels},H,W) images, "
                            f"got {x.dtype} {tuple(x.shape)}")
        b, c, h, w = x.shape
        params = [p.to(x.device) for p in self.sample(b, h, w, generator)]
        kernels = [blur_kernel_size(v.blur_sigma[1], self.size, self.size) for v in self.views]
        size = (self.size, self.size)
        if kernels[0] == kernels[1]:
            # Both views as one batch of 2B (parameters are per sample anyway): half the op calls, twice the
            # work per call. The copy for the second view is the uint8 -> [0, 1] conversion itself.
            x2 = torch.empty((2, b, c, h, w), dtype=torch.float32, device=x.device)
            torch.mul(x.unsqueeze(0).expand(2, b, c, h, w), 1.0 / 255.0, out=x2)
            y = apply_view(x2.view(2 * b, c, h, w), ViewParams.cat(params), size, kernels[0])
            y = y.sub_(self.mean).div_(self.std)
            return y[:b], y[b:]
        xf = x.float().div_(255.0)
        v1, v2 = (apply_view(xf, p, size, k).sub_(self.mean).div_(self.std) for p, k in zip(params, kernels))
        return v1, v2
