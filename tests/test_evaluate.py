"""Linear probe, kNN and collapse diagnostics on synthetic data with known answers."""
from __future__ import annotations

import math

import pytest
import torch

from bsstudy.evaluate import collapse_diagnostics, effective_rank, knn_predict, knn_top1, linear_probe
from bsstudy.evaluate import probe as probe_mod
from bsstudy.evaluate import stratified_split


def _blobs(n_per, d, k, sep, seed):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g) * sep
    y = torch.arange(k).repeat_interleave(n_per)
    x = centers[y] + torch.randn(len(y), d, generator=g)
    return x, y


def test_probe_separable_blobs_and_standardization():
    x, y = _blobs(100, 8, 3, 6.0, 0)
    tx, ty = _blobs(50, 8, 3, 6.0, 0)   # same centers (same seed), fresh noise is not needed for this check
    res = linear_probe(x * 100 + 5, y, tx * 100 + 5, ty, weight_decays=[0.0, 1e-3], seed=0)
    assert res["top1"] > 0.97
    assert set(res["val_top1"]) == {0.0, 1e-3}


def test_probe_chooses_weight_decay_on_held_out_train_only(monkeypatch):
    """Record every (fit, evaluate) the probe does: weight decay is scored on train rows only, and the
    test split is touched exactly once, by the refit classifier."""
    x, y = _blobs(60, 5, 4, 1.0, 1)
    tx, ty = _blobs(30, 5, 4, 1.0, 2)
    tx = tx + 1000.0   # make test rows recognisable
    seen_eval, seen_fit = [], []
    real_top1, real_fit = probe_mod.top1, probe_mod.fit_logreg

    def spy_top1(xx, yy, w, b):
        seen_eval.append(len(xx))
        return real_top1(xx, yy, w, b)

    def spy_fit(xx, yy, k, wd, it, init=None):
        seen_fit.append((len(xx), wd))
        return real_fit(xx, yy, k, wd, it, init)

    monkeypatch.setattr(probe_mod, "top1", spy_top1)
    monkeypatch.setattr(probe_mod, "fit_logreg", spy_fit)
    wds = [0.0, 1e-2, 10.0]
    res = probe_mod.linear_probe(x, y, tx, ty, weight_decays=wds, val_fraction=0.25, seed=0)
    fit_idx, val_idx = stratified_split(y, 0.25, 0)
    assert len(val_idx) == 60 and len(fit_idx) == 180
    # 3 fits on the 180 fit rows, then the refit on all 240 train rows with the chosen decay
    assert seen_fit == [(180, wd) for wd in sorted(wds, reverse=True)] + [(240, res["weight_decay"])]
    # validation scores on 60 held-out train rows; then test (120) once and train (240) once
    assert seen_eval == [60, 60, 60, 120, 240]
    best = max(res["val_top1"].values())
    assert res["val_top1"][res["weight_decay"]] == best


def test_probe_choice_follows_validation_not_test(monkeypatch):
    """If validation prefers a decay, it is chosen, whatever test accuracy it gets."""
    x, y = _blobs(40, 4, 2, 3.0, 3)
    scores = iter([0.5, 0.9, 0.7])

    real_top1 = probe_mod.top1
    calls = {"n": 0}

    def fake_top1(xx, yy, w, b):
        calls["n"] += 1
        return next(scores) if calls["n"] <= 3 else real_top1(xx, yy, w, b)

    monkeypatch.setattr(probe_mod, "top1", fake_top1)
    res = probe_mod.linear_probe(x, y, x, y, weight_decays=[0.0, 1e-4, 1e-3], seed=0)
    assert res["weight_decay"] == 1e-4


def test_stratified_split_per_class():
    y = torch.tensor([0] * 50 + [1] * 10 + [2] * 2)
    fit, val = stratified_split(y, 0.2, 0)
    assert sorted(torch.cat([fit, val]).tolist()) == list(range(62))
    assert [int((y[val] == c).sum()) for c in range(3)] == [10, 2, 1]


def test_knn_known_answer():
    # train: class 0 along +x, class 1 along +y; cosine ignores norms
    train = torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0]])
    ty = torch.tensor([0, 0, 1, 1])
    test = torch.tensor([[5.0, 1.0], [1.0, 4.0], [-1.0, 0.05]])
    # the third point points away from class 0: its two most cosine-similar neighbours are class 1
    assert knn_predict(train, ty, test, k=2, temperature=0.1).tolist() == [0, 1, 1]
    assert knn_top1(train, ty, test, torch.tensor([0, 1, 0]), k=2) == pytest.approx(2 / 3)


def test_knn_temperature_weighting():
    # k=3 neighbours: two weakly similar class-1 points vs one very similar class-0 point.
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    ty = torch.tensor([0, 1, 1])
    q = torch.tensor([[1.0, 0.6]])  # cos to e1 = 0.857, to e2 = 0.514
    assert knn_predict(train, ty, q, k=3, temperature=0.07).tolist() == [0]   # sharp: nearest wins
    assert knn_predict(train, ty, q, k=3, temperature=100.0).tolist() == [1]  # flat: majority wins


def test_collapse_known_answers():
    g = torch.Generator().manual_seed(0)
    n, d = 20000, 8
    white = torch.randn(n, d, generator=g) * 2.0
    r = collapse_diagnostics(white)
    assert r["effective_rank"] == pytest.approx(d, rel=0.01)
    assert r["avg_abs_corr"] < 0.02
    assert r["mean_std"] == pytest.approx(2.0, rel=0.02) and r["min_std"] == pytest.approx(2.0, rel=0.05)
    # rank one: every dimension a multiple of one signal → effective rank 1, |corr| = 1
    s = torch.randn(n, 1, generator=g)
    r1 = collapse_diagnostics(s * torch.tensor([[1.0, -2.0, 3.0, 0.5]]))
    assert r1["effective_rank"] == pytest.approx(1.0, abs=1e-6)
    assert r1["avg_abs_corr"] == pytest.approx(1.0, abs=1e-6)
    assert r1["min_std"] == pytest.approx(0.5, rel=0.02)
    # dead dimension: std 0, correlation counted as 0
    z = torch.cat([torch.randn(n, 3, generator=g), torch.zeros(n, 1)], 1)
    rz = collapse_diagnostics(z)
    assert rz["min_std"] == 0.0 and math.isfinite(rz["avg_abs_corr"])
    assert rz["effective_rank"] == pytest.approx(3.0, rel=0.02)


def test_effective_rank_formula():
    s = torch.tensor([3.0, 1.0, 0.0])
    p = torch.tensor([0.75, 0.25])
    assert effective_rank(s) == pytest.approx(math.exp(-(p * p.log()).sum().item()))


def test_fit_logreg_reaches_the_regularised_optimum():
    """The hand-written gradient is right: at the returned (W, b) the autograd gradient vanishes."""
    x, y = _blobs(50, 6, 3, 1.0, 4)
    wd = 1e-2
    w, b = probe_mod.fit_logreg(x, y, 3, wd, 200)
    w, b = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(x @ w + b, y) + wd * (w * w).sum()
    gw, gb = torch.autograd.grad(loss, [w, b])
    assert gw.abs().max() < 1e-4 and gb.abs().max() < 1e-4
    # warm start from the solution converges immediately to the same point
    w2, b2 = probe_mod.fit_logreg(x, y, 3, wd, 200, init=(w.detach(), b.detach()))
    torch.testing.assert_close(w2, w.detach(), atol=1e-3, rtol=1e-2)


def test_eval_subset_is_seeded_sorted_and_none_when_all_are_used():
    from bsstudy.evaluate import eval_subset

    idx = eval_subset(100, 10, seed=1)
    assert idx.tolist() == sorted(idx.tolist()) and len(set(idx.tolist())) == 10 and idx.max() < 100
    assert torch.equal(idx, eval_subset(100, 10, seed=1)) and not torch.equal(idx, eval_subset(100, 10, seed=2))
    assert eval_subset(100, None, seed=1) is None and eval_subset(100, 100, seed=1) is None


def test_few_label_draw_is_k_per_class_seeded_and_refuses_a_small_pool():
    from bsstudy.errors import UserError
    from bsstudy.evaluate.probe import few_label_draw
    y = torch.arange(4).repeat_interleave(30)[torch.randperm(120, generator=torch.Generator().manual_seed(1))]
    idx = few_label_draw(y, 5, seed=3)
    assert torch.equal(torch.bincount(y[idx], minlength=4), torch.full((4,), 5))
    assert torch.equal(idx, few_label_draw(y, 5, seed=3)) and torch.equal(idx, idx.sort().values)
    assert not torch.equal(idx, few_label_draw(y, 5, seed=4))
    with pytest.raises(UserError, match="eval.few_shot: 31 labelled images per class"):
        few_label_draw(y, 31, seed=0)


def test_few_label_probe_learns_from_k_labels_and_averages_its_draws():
    from bsstudy.evaluate.probe import few_label_probe
    x, y = _blobs(200, 16, 5, 1.2, 0)
    tx, ty = _blobs(200, 16, 5, 1.2, 0)
    res = {k: few_label_probe(x, y, tx, ty, k=k, draws=4, seed=0, weight_decays=[1e-3, 1e-1]) for k in (2, 50)}
    for k, r in res.items():
        assert len(r["draws"]) == 4 and r["top1"] == pytest.approx(sum(r["draws"]) / 4)
        assert r["sd"] > 0                                   # different label draws, different probes
    full = linear_probe(x, y, tx, ty, weight_decays=[1e-3, 1e-1])["top1"]
    assert 0.2 < res[2]["top1"] < res[50]["top1"] <= full + 0.02   # more labels help; chance is 0.2


@pytest.mark.parametrize("overrides, match", [
    (["eval.few_shot=[0]"], "eval.few_shot: \\[0\\] must be a list of distinct integers"),
    (["eval.few_shot=[10,10]"], "distinct"),
    (["eval.few_shot_draws=0"], "eval.few_shot_draws: 0"),
    (["eval.few_shot=[100]", "eval.max_train_samples=500"], "needs more than eval.max_train_samples=500"),
])
def test_few_shot_keys_are_validated_naming_the_key(overrides, match):
    from bsstudy.config import cell_config
    from bsstudy.errors import UserError
    with pytest.raises(UserError, match=match):
        cell_config(overrides)
    cell_config(["eval.few_shot=[10,100]", "eval.max_train_samples=1000"])   # fits: no error
