"""Evaluation of an ``SSLModel`` under a run config: linear probe and kNN on frozen backbone features,
collapse diagnostics of embeddings and features (what result.json and init_eval.json report)."""
from __future__ import annotations

from typing import Any, Callable

import torch
from omegaconf import DictConfig

from .collapse import collapse_diagnostics
from .features import extract_features
from .knn import knn_top1
from .probe import few_label_probe, linear_probe

# What init_eval.json keeps of an evaluation of the untrained network.
INIT_FIELDS: tuple[str, ...] = ("linear_top1", "knn_top1", "probe", "collapse_backbone", "few_shot")


def eval_subset(n: int, cap: int | None, seed: int) -> torch.Tensor | None:
    """Sorted indices of a random ``cap`` of ``n`` train images (seeded), or None when all are used."""
    if cap is None or cap >= n:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:cap].sort().values


def evaluate_model(model: torch.nn.Module, cfg: DictConfig, device: torch.device,
                   amp_dtype: torch.dtype | None = None, collapse_samples: int = 8192,
                   say: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Linear probe + kNN top-1 on frozen backbone features and collapse diagnostics.

    Uses dataset splits ``train`` (probe fit; weight decay chosen on a held-out part of it) and ``test``
    (reported once). ``eval.max_train_samples`` caps the train images; collapse uses at most
    ``collapse_samples`` train images (projector embeddings and backbone features). Returns
    ``linear_top1``, ``knn_top1``, ``probe``, ``collapse``, ``collapse_backbone`` (all None when the
    features are not finite; a disabled ``eval.linear`` / ``eval.knn`` leaves its score None), and
    ``few_shot`` ({str(k): few_label_probe result} for each k of ``eval.few_shot``; None when empty).
    ``say`` gets one line as each phase starts (features, linear probe, few-label probes, kNN, collapse)."""
    from ..data import load_dataset

    ev = cfg.eval
    train = load_dataset(cfg.dataset, "train")
    test = load_dataset(cfg.dataset, "test")
    tr_img, tr_y = train.images, train.labels
    idx = eval_subset(len(tr_img), ev.max_train_samples, int(cfg.seed))
    if idx is not None:
        tr_img, tr_y = tr_img[idx], tr_y[idx]
    backbone, projector = model.backbone, model.projector
    say(f"evaluation: extracting features ({len(tr_img)} train, {len(test.images)} test images)")
    tr_f, tr_z = extract_features(backbone, tr_img, cfg.dataset, device, autocast_dtype=amp_dtype, head=projector)
    te_f = extract_features(backbone, test.images, cfg.dataset, device, autocast_dtype=amp_dtype)
    tr_y, te_y = tr_y.to(device), test.labels.to(device)
    nc = int(cfg.dataset.num_classes) if cfg.dataset.num_classes is not None else len(train.classes)
    out: dict[str, Any] = {"linear_top1": None, "knn_top1": None, "probe": None, "few_shot": None}
    if not (torch.isfinite(tr_f).all() and torch.isfinite(te_f).all()):
        return out | {"collapse": None, "collapse_backbone": None}
    if ev.linear:
        say(f"evaluation: linear probe ({len(ev.probe_weight_decays)} weight decays)")
        probe = linear_probe(tr_f, tr_y, te_f, te_y, weight_decays=list(ev.probe_weight_decays),
                             val_fraction=float(ev.probe_val_fraction), max_iter=int(ev.probe_max_iter),
                             seed=int(cfg.seed), num_classes=nc)
        out["linear_top1"] = probe["top1"]
        out["probe"] = {"weight_decay": probe["weight_decay"], "train_top1": probe["train_top1"],
                        "val_top1": {str(k): v for k, v in probe["val_top1"].items()}}
    if ev.few_shot:
        say(f"evaluation: few-label linear probes ({', '.join(str(k) for k in ev.few_shot)} per class, "
            f"{ev.few_shot_draws} draws)")
        out["few_shot"] = {
            str(k): few_label_probe(tr_f, tr_y, te_f, te_y, k=int(k), draws=int(ev.few_shot_draws),
                                    seed=int(cfg.seed), weight_decays=list(ev.probe_weight_decays),
                                    val_fraction=float(ev.probe_val_fraction), max_iter=int(ev.probe_max_iter),
                                    num_classes=nc)
            for k in ev.few_shot}
    if ev.knn:
        say(f"evaluation: kNN (k={ev.knn_k})")
        out["knn_top1"] = knn_top1(tr_f, tr_y, te_f, te_y, k=int(ev.knn_k),
                                   temperature=float(ev.knn_temperature), num_classes=nc)
    m = min(collapse_samples, len(tr_f))
    say(f"evaluation: collapse diagnostics ({m} images)")
    out["collapse"] = collapse_diagnostics(tr_z[:m])
    out["collapse_backbone"] = collapse_diagnostics(tr_f[:m])
    return out


def evaluate_at_init(model: torch.nn.Module, cfg: DictConfig, device: torch.device,
                     amp_dtype: torch.dtype | None = None,
                     say: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """The probe of the untrained network (``eval.at_init``): the ``INIT_FIELDS`` of ``evaluate_model``.

    It is the baseline SSL has to beat: on small images random conv features are already strong, so a
    trained run's accuracy means little without it."""
    full = evaluate_model(model, cfg, device, amp_dtype, say=say)
    return {k: full[k] for k in INIT_FIELDS}
