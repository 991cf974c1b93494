"""Feature extraction for evaluation: eval mode, no augmentation, normalised input, batched, no grad."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn


@torch.no_grad()
def extract_features(backbone: nn.Module, images: Tensor, dataset_cfg: Any, device: torch.device | str,
                     batch_size: int = 512, autocast_dtype: torch.dtype | None = None,
                     head: Callable[[Tensor], Tensor] | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """Backbone features (N, feature_dim) in float32 on ``device`` of uint8 ``images`` (N, C, H, W).

    With ``head`` (e.g. the projector) also returns head(features), so both are computed in one pass.
    The module's train/eval mode is restored afterwards."""
    from ..data.augment import normalize

    device = torch.device(device)
    was_training = backbone.training
    backbone.eval()
    if head is not None and isinstance(head, nn.Module):
        head_training = head.training
        head.eval()
    feats, heads = [], []
    try:
        for i in range(0, len(images), batch_size):
            x = normalize(images[i:i + batch_size].to(device, non_blocking=True), dataset_cfg)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                f = backbone(x)
                h = head(f) if head is not None else None
            feats.append(f.float())
            if h is not None:
                heads.append(h.float())
    finally:
        backbone.train(was_training)
        if head is not None and isinstance(head, nn.Module):
            head.train(head_training)
    out = torch.cat(feats)
    return (out, torch.cat(heads)) if head is not None else out
