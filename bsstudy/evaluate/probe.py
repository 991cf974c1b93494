"""Linear probe on cached features: multinomial logistic regression fitted full-batch with L-BFGS.

Weight decay is chosen on a stratified part of the TRAIN split held out for that purpose (never the test
split); the probe is then refitted on all train features and its test top-1 reported once.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError


def standardize(train_x: Tensor, *others: Tensor, eps: float = 1e-6) -> tuple[Tensor, ...]:
    """Standardize with the mean/std of ``train_x`` only (no test statistics leak into the probe)."""
    mean = train_x.mean(0, keepdim=True)
    std = train_x.std(0, keepdim=True).clamp_min(eps)
    return tuple((x - mean) / std for x in (train_x, *others))


def stratified_split(y: Tensor, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (fit, val): ``val_fraction`` of every class goes to val (at least one per class with >=2)."""
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"eval.probe_val_fraction: {val_fraction} must be in (0, 1)")
    g = torch.Generator().manual_seed(seed)
    fit, val = [], []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = int(round(val_fraction * len(idx)))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        else:
            n_val = 0
        val.append(idx[:n_val])
        fit.append(idx[n_val:])
    return torch.cat(fit).sort().values, torch.cat(val).sort().values


def fit_logreg(x: Tensor, y: Tensor, num_classes: int, weight_decay: float, max_iter: int = 200,
               init: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Minimise mean cross-entropy + weight_decay*||W||^2 over (W, b) with full-batch L-BFGS.

    The gradient is written out (softmax - onehot) instead of autograd: the probe is called for several
    weight decays on every evaluation and the per-iteration overhead dominates at these sizes.
    ``init`` warm-starts from another solution (e.g. the neighbouring weight decay)."""
    n, d = x.shape
    w0, b0 = init if init is not None else (torch.zeros(d, num_classes, dtype=x.dtype, device=x.device),
                                            torch.zeros(num_classes, dtype=x.dtype, device=x.device))
    w = w0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    onehot = F.one_hot(y, num_classes).to(x.dtype)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-5, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    @torch.no_grad()
    def closure() -> Tensor:
        logits = x @ w + b
        logp = torch.log_softmax(logits, dim=1)
        loss = -(onehot * logp).sum() / n + weight_decay * (w * w).sum()
        r = (logp.exp() - onehot) / n                      # d loss / d logits
        w.grad = x.T @ r + 2.0 * weight_decay * w
        b.grad = r.sum(0)
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def top1(x: Tensor, y: Tensor, w: Tensor, b: Tensor) -> float:
    """Top-1 accuracy (fraction) of the linear classifier (w, b) on (x, y)."""
    return float(((x @ w + b).argmax(1) == y).float().mean())


def linear_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *,
                 weight_decays: Sequence[float] = (0.0, 1e-6, 1e-5, 1e-4, 1e-3), val_fraction: float = 0.1,
                 max_iter: int = 200, seed: int = 0, num_classes: int | None = None) -> dict:
    """Fit the probe on cached features and report test top-1.

    Returns {"top1" (test, fraction), "weight_decay" (chosen), "val_top1" {wd: held-out train top-1},
    "train_top1"}. The test split is used exactly once, after the choice."""
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise UserError("linear_probe: features and labels differ in length")
    if not len(weight_decays):
        raise UserError("eval.probe_weight_decays: needs at least one value")
    train_x, train_y = train_x.float(), train_y.long()
    test_x, test_y = test_x.float(), test_y.long()
    k = int(num_classes if num_classes is not None else int(max(train_y.max(), test_y.max())) + 1)

    fit_idx, val_idx = stratified_split(train_y, val_fraction, seed)
    val_top1: dict[float, float] = {}
    if len(weight_decays) == 1 or len(val_idx) == 0:
        best = float(weight_decays[0])
    else:
        fx, vx = standardize(train_x[fit_idx], train_x[val_idx])
        init = None
        # largest decay first: each solution warm-starts the next, less regularised one
        for wd in sorted(weight_decays, reverse=True):
            w, b = fit_logreg(fx, train_y[fit_idx], k, float(wd), max_iter, init)
            init = (w, b)
            val_top1[float(wd)] = top1(vx, train_y[val_idx], w, b)
        # ties -> the larger weight decay (the simpler model)
        best = max(val_top1, key=lambda wd: (val_top1[wd], wd))

    tx, sx = standardize(train_x, test_x)
    w, b = fit_logreg(tx, train_y, k, best, max_iter)
    return {"top1": top1(sx, test_y, w, b), "weight_decay": best, "val_top1": val_top1,
            "train_top1": top1(tx, train_y, w, b)}


def few_label_draw(y: Tensor, k: int, seed: int) -> Tensor:
    """Sorted indices of ``k`` images of every class of ``y``, drawn without replacement (seeded).

    The draw depends only on (labels, k, seed): every run of a seed, trained or untrained, probes the same
    labelled images, so few-label scores pair within seed like the full probe."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in torch.unique(y.cpu()):
        idx = torch.nonzero(y.cpu() == c).flatten()
        if len(idx) < k:
            raise UserError(f"eval.few_shot: {k} labelled images per class, but class {int(c)} has only "
                            f"{len(idx)} in the probe's train pool (raise eval.max_train_samples or lower k)")
        picks.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.cat(picks).sort().values.to(y.device)


def few_label_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *, k: int, draws: int,
                    seed: int, **probe_kw) -> dict:
    """The linear probe fitted on ``k`` labelled train images per class, for ``draws`` label draws.

    Like the 1%/10%-label evaluations of SimCLR (Chen et al., 2020) but linear on frozen features: each draw
    is an independent ``linear_probe`` (weight decay chosen on a held-out part of its own k labels, test
    split used once). Returns {"top1" (mean over draws), "sd" (over draws; None for one draw),
    "draws" (test top-1 of each draw)}."""
    if k < 1 or draws < 1:
        raise UserError(f"eval.few_shot: k={k} and eval.few_shot_draws={draws} must be >= 1")
    scores = []
    for d in range(draws):
        # distinct, seed-determined label draws per (seed, k, draw)
        idx = few_label_draw(train_y, k, seed * 1_000_003 + k * 7919 + d)
        res = linear_probe(train_x[idx], train_y[idx], test_x, test_y, seed=seed + d, **probe_kw)
        scores.append(res["top1"])
    t = torch.tensor(scores, dtype=torch.float64)
    return {"top1": float(t.mean()), "sd": float(t.std()) if draws > 1 else None, "draws": scores}
