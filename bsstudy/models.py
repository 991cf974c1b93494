"""Backbones (small_cnn, resnet18, resnet50), the projector and the predictor;
``SSLModel(x) -> (features, embeddings)``, ``SSLModel(x, predict=True) -> (features, embeddings, predictions)``.

Backbones return pooled features ``(B, feature_dim)``; the linear probe and kNN read these, the SSL loss
reads the projector's output. All modules work with channels_last inputs and weights.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from bsstudy.errors import UserError


def _get(cfg: Any, key: str, default: Any = ...) -> Any:
    if isinstance(cfg, Mapping):
        val = cfg.get(key, default)
    else:
        val = getattr(cfg, key, default)
    if val is ...:
        raise UserError(f"model config is missing key '{key}'")
    return val


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU blocks (widths w, 2w, 4w, feature_dim; stride 2 from the second), global avg pool."""

    def __init__(self, channels: int, width: int, feature_dim: int) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, feature_dim]
        blocks, c = [], channels
        for i, w in enumerate(widths):
            blocks.append(_conv_bn_relu(c, w, stride=1 if i == 0 else 2))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.blocks(x)), 1)


class ResNetBackbone(nn.Module):
    """torchvision ResNet without its fc layer; ``stem='cifar'`` uses a 3x3 stride-1 conv and no max-pool."""

    def __init__(self, arch: str, channels: int, stem: str) -> None:
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None)
        if stem == "cifar":
            net.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif stem == "imagenet":
            if channels != 3:
                net.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        else:
            raise UserError(f"model.stem must be 'cifar' or 'imagenet', got '{stem}'")
        if stem == "cifar" or channels != 3:
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
        self.feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_backbone(model_cfg: Any, channels: int, image_size: int) -> nn.Module:
    """Backbone for ``channels`` x ``image_size``^2 inputs; its ``.feature_dim`` is the output width."""
    name = _get(model_cfg, "name")
    if image_size < 8:
        raise UserError(f"image_size={image_size} is too small for the backbones (need >= 8)")
    if name == "small_cnn":
        width, feature_dim = int(_get(model_cfg, "width")), int(_get(model_cfg, "feature_dim"))
        if width <= 0 or feature_dim <= 0:
            raise UserError(f"model.width and model.feature_dim must be positive, got {width}, {feature_dim}")
        return SmallCNN(channels, width, feature_dim)
    if name in ("resnet18", "resnet50"):
        net = ResNetBackbone(name, channels, str(_get(model_cfg, "stem")))
        want = _get(model_cfg, "feature_dim", None)
        if want is not None and int(want) != net.feature_dim:
            raise UserError(f"model.feature_dim={want} but {name} outputs {net.feature_dim} features")
        return net
    raise UserError(f"unknown model '{name}' (expected one of resnet18, resnet50, small_cnn)")


def build_projector(in_dim: int, projector_cfg: Any, what: str = "projector") -> nn.Module:
    """MLP head: ``layers`` linear layers (hidden_dim wide), BN (optional) + ReLU between them, last one plain;
    with ``out_batch_norm`` (SimSiam's projector) a BatchNorm without affine parameters after the last one."""
    layers = int(_get(projector_cfg, "layers"))
    hidden, out = int(_get(projector_cfg, "hidden_dim")), int(_get(projector_cfg, "out_dim"))
    bn = bool(_get(projector_cfg, "batch_norm"))
    out_bn = bool(_get(projector_cfg, "out_batch_norm", False))  # absent from the groups that predate it
    if layers < 1 or hidden < 1 or out < 1:
        raise UserError(f"{what} needs layers >= 1, hidden_dim >= 1, out_dim >= 1; got {layers}, {hidden}, {out}")
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers - 1):
        mods.append(nn.Linear(d, hidden, bias=not bn))  # BN's shift makes the bias redundant
        if bn:
            mods.append(nn.BatchNorm1d(hidden))
        mods.append(nn.ReLU(inplace=True))
        d = hidden
    mods.append(nn.Linear(d, out, bias=not out_bn))
    if out_bn:
        mods.append(nn.BatchNorm1d(out, affine=False))
    return nn.Sequential(*mods)


def build_predictor(dim: int, predictor_cfg: Any) -> nn.Module:
    """Predictor head of SimSiam/BYOL: an MLP from the embedding (``dim``) back to ``dim``, with the
    projector's layout (``layers``, ``hidden_dim``, ``batch_norm``; no BN on its output)."""
    layers = int(_get(predictor_cfg, "layers"))
    cfg = {"layers": layers, "hidden_dim": int(_get(predictor_cfg, "hidden_dim")), "out_dim": dim,
           "batch_norm": bool(_get(predictor_cfg, "batch_norm"))}
    return build_projector(dim, cfg, what="predictor")


class SSLModel(nn.Module):
    """Backbone + projector (+ optional predictor); ``forward(x) -> (features, embeddings)``, and with
    ``predict=True`` ``(features, embeddings, predictor(embeddings))``. The predictor runs inside ``forward``
    so that a DistributedDataParallel wrapper sees all parameters used."""

    def __init__(self, backbone: nn.Module, projector: nn.Module, predictor: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector
        self.predictor = predictor

    def forward(self, x: torch.Tensor, predict: bool = False):
        features = self.backbone(x)
        z = self.projector(features)
        if not predict:
            return features, z
        if self.predictor is None:
            raise ValueError("SSLModel.forward(predict=True) needs a model built with a predictor")
        return features, z, self.predictor(z)
