"""Evaluation of a frozen backbone: feature extraction, linear probe (L-BFGS on cached features),
kNN top-1 (cosine, temperature-weighted votes) and collapse diagnostics (seed 004); ``evaluate_model``
runs them all on a model under a run config (what a run reports)."""
from .collapse import collapse_diagnostics, effective_rank, singular_spectrum
from .features import extract_features
from .knn import knn_predict, knn_top1
from .model import INIT_FIELDS, eval_subset, evaluate_at_init, evaluate_model
from .probe import fit_logreg, linear_probe, standardize, stratified_split

__all__ = ["extract_features", "linear_probe", "fit_logreg", "standardize", "stratified_split",
           "knn_predict", "knn_top1", "collapse_diagnostics", "effective_rank", "singular_spectrum",
           "evaluate_model", "evaluate_at_init", "eval_subset", "INIT_FIELDS"]
