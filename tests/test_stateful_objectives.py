"""simsiam, byol, mocov2, sogclr against float64 restatements of each paper's / official code's formula and
lightly 1.6; the momentum target's schedule and update; queue order; state round trips; 2 gloo ranks == 1."""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

from bsstudy.errors import UserError
from bsstudy.objectives import OBJECTIVES, build_objective
from bsstudy.registry import METHODS, bias_refusal
from bsstudy.train.target import MomentumTarget, momentum_at

NEW = ("simsiam", "byol", "mocov2", "sogclr")


def _close(a, b, tol=1e-12):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def _leaf(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(True)


def _grads(loss, xs):
    return torch.autograd.grad(loss, xs, allow_unused=True, retain_graph=True)


# ------------------------------------------------------------------------ registry / interface
def test_registry_fields_and_bias_refusal():
    assert [METHODS[m].stateful for m in NEW] == [False, True, True, True]
    assert METHODS["simsiam"].needs_predictor and METHODS["byol"].needs_target and METHODS["mocov2"].needs_queue
    assert METHODS["sogclr"].needs_indices and METHODS["sogclr"].needs_num_samples
    for m in NEW:
        reason = bias_refusal(m)
        assert reason and reason.startswith(f"{m}: ") and "\n" not in reason
        assert m in OBJECTIVES
    for m in ("simclr", "vicreg", "vicreg_unbiased"):
        assert bias_refusal(m) is None and not METHODS[m].stateful


def test_missing_and_unexpected_inputs_are_errors():
    z = torch.randn(6, 4)
    with pytest.raises(ValueError, match="missing \\['p1', 'p2'\\]"):
        build_objective("simsiam")(z, z)
    with pytest.raises(ValueError, match="unexpected \\['indices'\\]"):
        build_objective("simsiam")(z, z, p1=z, p2=z, indices=torch.arange(6))
    with pytest.raises(ValueError, match="p1 and p2 must have the same shape"):
        build_objective("simsiam")(z, z, p1=z[:5], p2=z[:5])
    with pytest.raises(ValueError, match="indices must be an int64"):
        build_objective("sogclr").bind(10)(z, z, indices=torch.arange(6, dtype=torch.int32))
    with pytest.raises(ValueError, match="bind"):
        build_objective("sogclr")(z, z, indices=torch.arange(6))
    with pytest.raises(UserError, match="queue_size=300 exceeds the 256 pretraining images"):
        build_objective("mocov2", queue_size=300).bind(256)
    with pytest.raises(UserError, match="mocov2: parameter queue_size"):
        build_objective("mocov2", queue_size=0)
    with pytest.raises(UserError, match="sogclr: parameter gamma"):
        build_objective("sogclr", gamma=1.5)
    with pytest.raises(UserError, match="unknown parameter"):
        build_objective("byol", temperature=0.1)


# ------------------------------------------------------------------------------------ SimSiam
def test_simsiam_equals_paper_algorithm_and_lightly():
    """Algorithm 1 of Chen & He (2021): L = D(p1, z2)/2 + D(p2, z1)/2, D(p, z) = -(p/||p||).(z.detach()/||z||)."""
    from lightly.loss import NegativeCosineSimilarity

    g = torch.Generator().manual_seed(0)
    z1, z2, p1, p2 = (_leaf(g, 10, 7) for _ in range(4))

    def D(p, z):
        z = z.detach()
        return -((p / p.norm(dim=1, keepdim=True)) * (z / z.norm(dim=1, keepdim=True))).sum(dim=1).mean()

    ref = D(p1, z2) / 2 + D(p2, z1) / 2
    out = build_objective("simsiam")(z1, z2, p1=p1, p2=p2)
    _close(out.loss, ref)
    assert set(out.terms) == {"neg_cosine"}
    got, want = _grads(out.loss, [p1, p2, z1, z2]), _grads(ref, [p1, p2, z1, z2])
    for a, b in zip(got[:2], want[:2]):
        _close(a, b)
    assert got[2] is None and got[3] is None          # stop-gradient: nothing reaches z
    crit = NegativeCosineSimilarity()
    _close(out.loss, 0.5 * (crit(p1, z2.detach()) + crit(p2, z1.detach())))


# --------------------------------------------------------------------------------------- BYOL
def test_byol_equals_paper_loss_and_lightly():
    """BYOL eq. 2 + symmetrisation: ||q~ - z'~||^2 summed over both directions, mean over rows."""
    from lightly.loss import NegativeCosineSimilarity

    g = torch.Generator().manual_seed(1)
    z1, z2, p1, p2 = (_leaf(g, 9, 6) for _ in range(4))
    t1, t2 = (torch.randn(9, 6, generator=g, dtype=torch.float64) for _ in range(2))

    def L(q, z):
        qn, zn = q / q.norm(dim=1, keepdim=True), z / z.norm(dim=1, keepdim=True)
        return ((qn - zn) ** 2).sum(dim=1).mean()

    ref = L(p1, t2) + L(p2, t1)
    out = build_objective("byol")(z1, z2, p1=p1, p2=p2, t1=t1, t2=t2)
    _close(out.loss, ref)
    for a, b in zip(_grads(out.loss, [p1, p2]), _grads(ref, [p1, p2])):
        _close(a, b)
    # lightly's BYOL example: 0.5 (NegCos(p1, t2) + NegCos(p2, t1)); ours = 4 + 4 x that
    crit = NegativeCosineSimilarity()
    _close(out.loss, 4 + 4 * 0.5 * (crit(p1, t2) + crit(p2, t1)))


# ------------------------------------------------------------------------------------ MoCo v2
def _moco_reference(q, k, queue, tau):
    """He et al. (2020) Algorithm 1: l_pos = q.k, l_neg = q.queue, CE(logits/tau, 0); q, k normalised."""
    q = q / q.norm(dim=1, keepdim=True)
    k = (k / k.norm(dim=1, keepdim=True)).detach()
    l_pos = (q * k).sum(dim=1, keepdim=True)
    l_neg = q @ queue.T
    logits = torch.cat([l_pos, l_neg], dim=1) / tau
    return -(logits[:, 0] - torch.logsumexp(logits, dim=1)).mean()


def _initial_queue(K, d):
    """The official initialisation: K random unit vectors (here from a generator seeded 0)."""
    return F.normalize(torch.randn(K, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64), dim=1)


def test_mocov2_loss_and_fifo_queue_order():
    """Loss and gradient against Algorithm 1 over 5 steps with K=12, B=5 (wraps around: K not a multiple of
    B); after each step the queue holds the newest K keys (normalised), oldest first."""
    g = torch.Generator().manual_seed(2)
    K, B, d, tau = 12, 5, 4, 0.2
    f = build_objective("mocov2", temperature=tau, queue_size=K).bind(100)
    fifo = list(_initial_queue(K, d))
    assert f.queue() is None
    for step in range(5):
        z1, z2 = _leaf(g, B, d), _leaf(g, B, d)
        t1, t2 = (torch.randn(B, d, generator=g, dtype=torch.float64) for _ in range(2))
        out = f(z1, z2, t1=t1, t2=t2)
        ref = _moco_reference(z1, t2, torch.stack(fifo), tau)
        _close(out.loss, ref)
        for a, b in zip(_grads(out.loss, [z1]), _grads(ref, [z1])):
            _close(a, b)
        assert _grads(out.loss, [z2])[0] is None            # only view 1 queries (official MoCo v2)
        fifo = (fifo + list(F.normalize(t2, dim=1)))[-K:]
        _close(f.queue(), torch.stack(fifo))
    assert f.state_dict()["enqueued"] == 5 * B and f.state_dict()["ptr"] == (5 * B) % K


def test_mocov2_first_step_uses_the_initial_queue():
    g = torch.Generator().manual_seed(3)
    f = build_objective("mocov2", queue_size=8).bind(100)
    z1, z2 = _leaf(g, 4, 3), _leaf(g, 4, 3)
    t2 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    f.eval()
    out = f(z1, z2, t1=t2, t2=t2)
    init = f.queue()                                     # eval mode: nothing enqueued
    assert f.state_dict()["enqueued"] == 0
    _close(out.loss, _moco_reference(z1, t2, init, 0.2))
    _close(init, _initial_queue(8, 3))


def test_mocov2_equals_lightly_ntxent_memory_bank():
    """lightly 1.6 NTXentLoss(memory_bank_size=(K, d)): out0 = query, out1 = key, negatives = the bank before
    this batch, then the batch's keys are enqueued. Conventions: float32; lightly's bank drops the rest of a
    batch at the wrap instead of wrapping around, so K is a multiple of B here; both banks start equal."""
    from lightly.loss import NTXentLoss

    g = torch.Generator().manual_seed(4)
    K, B, d = 12, 4, 5
    ours = build_objective("mocov2", temperature=0.2, queue_size=K).bind(100)
    theirs = NTXentLoss(temperature=0.2, memory_bank_size=(K, d))
    for step in range(5):
        z1 = torch.randn(B, d, generator=g).requires_grad_(True)
        t2 = torch.randn(B, d, generator=g)
        out = ours(z1, z1, t1=t2, t2=t2)
        if step == 0:
            theirs.memory_bank.bank = torch.roll(ours.queue(), B, dims=0).clone()  # the bank before step 0
            theirs.memory_bank.bank_ptr.zero_()
            theirs.memory_bank._dequeue_and_enqueue(F.normalize(t2, dim=1))
            continue
        ref = theirs(z1, t2)
        torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours._queue, theirs.memory_bank.bank, rtol=0, atol=0)


# -------------------------------------------------------------------------------------- SogCLR
def _sogclr_official(h1, h2, u_store, index, gamma, T):
    """Transcription of Optimization-AI/SogCLR ``dynamic_contrastive_loss`` (single process), float64.
    Updates ``u_store`` in place like the official code and returns the loss."""
    LARGE = 1e9
    h1, h2 = F.normalize(h1, p=2, dim=1), F.normalize(h2, p=2, dim=1)
    B = h1.shape[0]
    labels = F.one_hot(torch.arange(B), B * 2).double()
    masks = F.one_hot(torch.arange(B), B).double()
    logits_aa = h1 @ h1.T - masks * LARGE
    logits_bb = h2 @ h2.T - masks * LARGE
    logits_ab, logits_ba = h1 @ h2.T, h2 @ h1.T
    neg_mask = 1 - labels
    logits_ab_aa = torch.cat([logits_ab, logits_aa], 1)
    logits_ba_bb = torch.cat([logits_ba, logits_bb], 1)
    neg1 = torch.exp(logits_ab_aa / T) * neg_mask
    neg2 = torch.exp(logits_ba_bb / T) * neg_mask
    if u_store[index].sum() == 0:
        gamma = 1.0
    u1 = (1 - gamma) * u_store[index][:, None] + gamma * neg1.sum(1, keepdim=True) / (2 * (B - 1))
    u2 = (1 - gamma) * u_store[index][:, None] + gamma * neg2.sum(1, keepdim=True) / (2 * (B - 1))
    u_store[index] = ((u1.detach() + u2.detach()) / 2)[:, 0]
    w1, w2 = (neg1 / u1).detach(), (neg2 / u2).detach()

    def ce(labels, logits, weights):
        expsum = (weights * logits).sum(1, keepdim=True) / (2 * (B - 1))
        return -(labels * (logits - expsum)).sum(1)

    return (ce(labels, logits_ab_aa, w1) + ce(labels, logits_ba_bb, w2)).mean()


def test_sogclr_equals_official_code_over_epochs():
    """Three epochs over 12 images in batches of 4 (every image revisited): loss, gradients and u."""
    g = torch.Generator().manual_seed(5)
    N, B, d, gamma, tau = 12, 4, 6, 0.9, 0.3
    f = build_objective("sogclr", temperature=tau, gamma=gamma).bind(N)
    u_ref = torch.zeros(N, dtype=torch.float64)
    for epoch in range(3):
        perm = torch.randperm(N, generator=g)
        for s in range(N // B):
            idx = perm[s * B:(s + 1) * B]
            z1, z2 = _leaf(g, B, d), _leaf(g, B, d)
            out = f(z1, z2, indices=idx)
            ref = _sogclr_official(z1, z2, u_ref, idx, gamma, tau)
            _close(out.loss, ref)
            for a, b in zip(_grads(out.loss, [z1, z2]), _grads(ref, [z1, z2])):
                _close(a, b)
            _close(f.state(), u_ref)
    assert (u_ref > 0).all() and f.state_dict()["updates"] == 9


def test_sogclr_gradient_is_tau_times_global_contrastive_gradient():
    """With gamma = 1 (u = this batch's estimate) the surrogate's gradient is tau x the gradient of the
    decoupled contrastive loss sum over both views' anchor means of -s_pos/tau + log mean_neg exp(s/tau)."""
    g = torch.Generator().manual_seed(6)
    n, d, tau = 6, 5, 0.25
    z1, z2 = _leaf(g, n, d), _leaf(g, n, d)
    out = build_objective("sogclr", temperature=tau, gamma=1.0).bind(n)(z1, z2, indices=torch.arange(n))
    h = F.normalize(torch.cat([z1, z2]), dim=1)
    s = h @ h.T / tau
    pos = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    mask = torch.ones(2 * n, 2 * n, dtype=torch.bool)
    mask[torch.arange(2 * n), torch.arange(2 * n)] = False
    mask[torch.arange(2 * n), pos] = False
    lse = torch.logsumexp(s.masked_fill(~mask, -math.inf), dim=1) - math.log(2 * (n - 1))
    gcl = (-s[torch.arange(2 * n), pos] + lse).sum() / n
    for a, b in zip(_grads(out.loss, [z1, z2]), _grads(gcl, [z1, z2])):
        _close(a, tau * b)


def test_state_round_trip_and_eval_freezes():
    g = torch.Generator().manual_seed(7)
    batches = [(torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g,
                dtype=torch.float64), torch.randperm(8, generator=g)[:4]) for _ in range(4)]
    for name, params in (("mocov2", {"queue_size": 6}), ("sogclr", {})):
        def kw(b):
            return {"indices": b[2]} if name == "sogclr" else {"t1": b[1], "t2": b[1]}
        a = build_objective(name, **params).bind(8)
        for b in batches[:2]:
            a(b[0], b[0] + 0.1, **kw(b))
        st = a.state_dict()
        c = build_objective(name, **params).bind(8)
        c.load_state_dict(st)
        for b in batches[2:]:
            _close(a(b[0], b[0] + 0.1, **kw(b)).loss, c(b[0], b[0] + 0.1, **kw(b)).loss)
        frozen = a.state_dict()
        a.eval()
        a(batches[0][0], batches[0][0], **kw(batches[0]))
        with torch.no_grad():
            a.train()(batches[1][0], batches[1][0], **kw(batches[1]))
        for k, v in frozen.items():
            assert torch.equal(v, a.state_dict()[k]) if isinstance(v, torch.Tensor) else v == a.state_dict()[k]
        with pytest.raises(ValueError, match="state needs keys"):
            c.load_state_dict({"x": 1})


# ---------------------------------------------------------------------------- momentum target
def test_cosine_momentum_schedule():
    """BYOL: tau_k = 1 - (1 - tau_base)(cos(pi k / K) + 1)/2."""
    K, base = 100, 0.99
    assert momentum_at(0, K, base, "cosine") == pytest.approx(base, abs=1e-15)
    assert momentum_at(K // 2, K, base, "cosine") == pytest.approx(1 - (1 - base) / 2, abs=1e-15)
    assert momentum_at(K, K, base, "cosine") == pytest.approx(1.0, abs=1e-15)
    taus = [momentum_at(k, K, base, "cosine") for k in range(K + 1)]
    assert all(b >= a for a, b in zip(taus, taus[1:]))
    assert momentum_at(37, K, 0.9, "constant") == 0.9
    with pytest.raises(UserError, match="method.target.schedule"):
        MomentumTarget(torch.nn.Module(), 0.99, "linear", 10)


def _tiny_ssl():
    from bsstudy.models import SSLModel, build_predictor, build_projector

    torch.manual_seed(0)
    bb = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU())
    bb.feature_dim = 6
    proj = build_projector(6, {"layers": 2, "hidden_dim": 8, "out_dim": 4, "batch_norm": True})
    return SSLModel(bb, proj, build_predictor(4, {"layers": 2, "hidden_dim": 3, "batch_norm": True})).double()


def test_target_update_parameters_and_buffers():
    """After each optimizer step: t <- tau t + (1 - tau) theta for every parameter and floating buffer
    (BatchNorm running statistics), integer buffers copied; the predictor is not part of the target; the
    target's forward uses batch statistics without touching its running statistics, and has no gradient."""
    model = _tiny_ssl()
    target = MomentumTarget(model, 0.9, "cosine", total_steps=4)
    assert not any(k.startswith("predictor") for k in target.state_dict())
    assert all(not p.requires_grad for p in target.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(8)
    ref = {k: v.clone() for k, v in target.state_dict().items()}
    for k in range(4):
        x = torch.randn(16, 5, generator=g, dtype=torch.float64)
        before = {n: v.clone() for n, v in target.state_dict().items()}
        y = target(x)
        assert not y.requires_grad
        for n, v in target.state_dict().items():
            assert torch.equal(v, before[n]), n            # forward leaves every buffer alone
        # batch statistics: equal to the online network's train-mode output with the target's weights
        _, z, p = model(x, predict=True)
        loss = (p - y).pow(2).mean() + z.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        tau = target.update(model, k)
        assert tau == pytest.approx(1 - 0.1 * (math.cos(math.pi * k / 4) + 1) / 2)
        online = {n[len(""):]: v for n, v in model.state_dict().items() if not n.startswith("predictor")}
        for n in ref:
            if ref[n].is_floating_point():
                ref[n] = tau * ref[n] + (1 - tau) * online[n]
            else:
                ref[n] = online[n].clone()
        for n, v in target.state_dict().items():
            _close(v, ref[n], 1e-13)
    assert int(target.state_dict()["backbone.1.num_batches_tracked"]) == 4
    fresh = MomentumTarget(_tiny_ssl(), 0.9, "cosine", total_steps=4)
    fresh.load_state(target.state())
    x = torch.randn(8, 5, generator=g, dtype=torch.float64)
    assert torch.equal(fresh(x), target(x))
    model.eval()
    target.train(False)                                   # stays in batch-statistics mode
    assert target.training


# ------------------------------------------------------------------------ 2 gloo ranks == 1 rank
WORLD, N_IMG, NB = 2, 16, 8


def _ddp_batches():
    g = torch.Generator().manual_seed(9)
    perm = torch.randperm(N_IMG, generator=g)
    out = []
    for s in range(4):  # two epochs' worth: every image twice
        idx = perm[(s % 2) * NB:(s % 2 + 1) * NB]
        z1 = torch.randn(NB, 5, generator=g, dtype=torch.float64)
        out.append({"z1": z1, "z2": z1 + 0.3 * torch.randn(NB, 5, generator=g, dtype=torch.float64),
                    "p1": torch.randn(NB, 5, generator=g, dtype=torch.float64),
                    "p2": torch.randn(NB, 5, generator=g, dtype=torch.float64),
                    "t1": torch.randn(NB, 5, generator=g, dtype=torch.float64),
                    "t2": torch.randn(NB, 5, generator=g, dtype=torch.float64), "indices": idx})
    return out


DDP_CONFIGS = [("simsiam", {}), ("byol", {}), ("mocov2", {"queue_size": 12}), ("sogclr", {"temperature": 0.3})]


def _ddp_run(name, params, rows):
    f = build_objective(name, **params)
    if METHODS[name].needs_num_samples:
        f.bind(N_IMG)
    res = {"loss": [], "grads": []}
    for b in _ddp_batches():
        leaves = {k: b[k][rows].clone().requires_grad_(k[0] in "zp") for k in ("z1", "z2")}
        kw = {k: (b[k][rows].clone().requires_grad_(True) if k[0] == "p" else b[k][rows]) for k in f.inputs}
        out = f(leaves["z1"], leaves["z2"], **kw)
        diff = [v for v in [*leaves.values(), *kw.values()] if v.requires_grad]
        grads = torch.autograd.grad(out.loss, diff, allow_unused=True)
        res["loss"].append(out.loss.detach())
        res["grads"].append([None if gr is None else gr.clone() for gr in grads])
    res["state"] = f.state_dict()
    return res


def _ddp_worker(rank, init_file, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        rows = slice(rank * NB // WORLD, (rank + 1) * NB // WORLD)
        torch.save({n: _ddp_run(n, p, rows) for n, p in DDP_CONFIGS}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_equal_one_rank(tmp_path):
    """Global-batch loss, world x gradients of each rank's rows, and the state (MoCo queue of the gathered
    keys in rank order, SogCLR u at the gathered indices) identical to one process on the whole batch."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for name, params in DDP_CONFIGS:
        single = _ddp_run(name, params, slice(None))
        for r, res in enumerate(ranks):
            rows = slice(r * NB // WORLD, (r + 1) * NB // WORLD)
            got = res[name]
            for step in range(len(single["loss"])):
                _close(got["loss"][step], single["loss"][step], 1e-10)
                for a, b in zip(got["grads"][step], single["grads"][step]):
                    assert (a is None) == (b is None)
                    if a is not None:
                        _close(a / WORLD, b[rows], 1e-10)
            for k, v in single["state"].items():
                if isinstance(v, torch.Tensor):
                    _close(got["state"][k], v, 1e-10)
                else:
                    assert got["state"][k] == v, (name, k)
        if name == "sogclr":
            assert (single["state"]["u"] > 0).all()
