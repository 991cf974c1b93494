"""kNN classification on frozen features: cosine similarity, temperature-weighted votes exp(sim/T)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError


@torch.no_grad()
def knn_predict(train_x: Tensor, train_y: Tensor, test_x: Tensor, *, k: int = 20, temperature: float = 0.07,
                num_classes: int | None = None, chunk: int = 1024) -> Tensor:
    """Predicted labels of ``test_x``: the k most cosine-similar train points vote with weight exp(sim/T)."""
    if k < 1:
        raise UserError(f"eval.knn_k: {k} must be >= 1")
    if temperature <= 0:
        raise UserError(f"eval.knn_temperature: {temperature} must be > 0")
    k = min(k, len(train_x))
    c = int(num_classes if num_classes is not None else int(train_y.max()) + 1)
    tr = F.normalize(train_x.float(), dim=1)
    preds = []
    for i in range(0, len(test_x), chunk):
        te = F.normalize(test_x[i:i + chunk].float(), dim=1)
        sim, idx = (te @ tr.T).topk(k, dim=1)                    # (m, k)
        # subtract 1 (the max cosine) inside exp: same argmax, no overflow at small T
        w = torch.exp((sim - 1.0) / temperature)
        votes = torch.zeros(len(te), c, device=te.device).scatter_add_(1, train_y[idx].long(), w)
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def knn_top1(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *, k: int = 20,
             temperature: float = 0.07, num_classes: int | None = None) -> float:
    """kNN top-1 accuracy (fraction) of ``test_x`` against the labelled ``train_x``."""
    pred = knn_predict(train_x, train_y, test_x, k=k, temperature=temperature, num_classes=num_classes)
    return float((pred.cpu() == test_y.cpu().long()).float().mean())
