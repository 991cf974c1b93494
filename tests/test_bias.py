"""Tests of the gradient-bias instrument (bsstudy bias): statistics, the J^T trick, known biases, CLI."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bsstudy.bias import measure, stats
from bsstudy.bias.cli import Settings, check
from bsstudy.bias.measure import MeasuredObjective, measure_all
from bsstudy.errors import UserError


# ------------------------------------------------------------------------------------------ helpers
def gaussian_pool(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlated Gaussian pairs (non-trivial covariance, views differ by noise), float64."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d) + torch.eye(d, dtype=torch.float64)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64) @ a
    z2 = z1 + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return z1, z2


def u_offdiag(z: torch.Tensor) -> torch.Tensor:
    """Test-local reference: U-statistic of Σ_{i≠j} Σ_ij² (shared/ESTIMATORS.md), exactly unbiased."""
    n = z.shape[0]
    zc = z - z.mean(0)
    s = zc.T @ zc
    r = (zc**2).sum(1)
    den = n * (n - 1) * (n - 2) * (n - 3)
    fro = ((n - 1) * (n - 2) * (s**2).sum() + torch.trace(s) ** 2 - n * (n - 1) * (r**2).sum()) / den
    diag = ((n * n - 3 * n + 3) * torch.diagonal(s) ** 2 - n * (n - 1) * (zc**4).sum(0)).sum() / den
    return fro - diag


class Injected:
    """Unbiased U-statistic loss plus a term whose minibatch gradient is biased by exactly c(1/B − 1/N)·v.

    T_B = c·N/B² · Σ_{a∈batch} <v_a, z1_a>: its gradient on row a is c·N/B²·v_a, which a batch contains
    with probability B/N, so E ĝ_B − g* = c(1/B − 1/N)·v (v lives on the z1 half of the pool gradient).
    """

    def __init__(self, v: torch.Tensor, z1_pool: torch.Tensor, c: float) -> None:
        self.v, self.pool, self.c = v, z1_pool, c

    def __call__(self, z1: torch.Tensor, z2: torch.Tensor) -> SimpleNamespace:
        n_pool, b = self.pool.shape[0], z1.shape[0]
        # find the batch rows in the pool (rows are distinct continuous draws)
        rows = torch.cdist(z1.detach(), self.pool).argmin(1)
        inj = self.c * n_pool / b**2 * (self.v[rows] * z1).sum()
        return SimpleNamespace(loss=u_offdiag(z1) + u_offdiag(z2) + inj, terms={})


# ------------------------------------------------------------------------------------------- stats
def test_jackknife_matches_brute_force_delete_one() -> None:
    rng = np.random.default_rng(0)
    d = rng.standard_normal((6, 40)) + 0.3
    gram = d @ d.T
    u, se = stats.jackknife_u_offdiag(gram)

    def u_of(rows: np.ndarray) -> float:
        k = rows.shape[0]
        return sum(rows[i] @ rows[j] for i in range(k) for j in range(k) if i != j) / (k * (k - 1))

    assert u == pytest.approx(u_of(d), rel=1e-12)
    dels = np.array([u_of(np.delete(d, j, axis=0)) for j in range(6)])
    assert se == pytest.approx(math.sqrt(5 / 6 * ((dels - dels.mean()) ** 2).sum()), rel=1e-10)
    with pytest.raises(ValueError):
        stats.jackknife_u_offdiag(gram[:2, :2])


def test_group_error_summary_noise_decomposition() -> None:
    """U = ‖D̄‖² − tr Ĉov/K, the raw error has the noise floor, per-batch noise = m × group variance."""
    rng = np.random.default_rng(1)
    k, m, p = 8, 4, 500
    bias = np.zeros(p)
    bias[0] = 0.5
    d = bias + rng.standard_normal((k, p)) * 0.2
    g = np.ones(p)
    s = stats.summarize_group_errors(d @ d.T, d @ g, float(g @ g), m)
    dbar = d.mean(0)
    within = ((d - dbar) ** 2).sum() / (k - 1)
    norm = math.sqrt(p)
    assert s["rel_bias_sq"] * p == pytest.approx(dbar @ dbar - within / k, rel=1e-10)
    assert s["rel_bias_raw"] == pytest.approx(np.linalg.norm(dbar) / norm)
    assert s["noise_floor"] == pytest.approx(math.sqrt(within / k) / norm)
    assert s["rel_noise"] == pytest.approx(math.sqrt(within * m) / norm)
    assert s["rel_bias_ci_low"] <= s["rel_bias"] <= s["rel_bias_ci_high"]
    assert s["rel_bias_ci_low"] <= 0.5 / norm <= s["rel_bias_ci_high"]
    assert s["bias_along_ci_low"] <= 0.5 / p <= s["bias_along_ci_high"]
    assert s["cosine"] == pytest.approx((g @ (g + dbar)) / (norm * np.linalg.norm(g + dbar)))


def test_ci_coverage_of_known_bias() -> None:
    """Over repeated experiments, the 95% interval for ‖b‖ covers the truth about 95% of the time."""
    rng = np.random.default_rng(2)
    k, p, trials = 8, 300, 400
    for b0 in (0.0, 0.03):
        b = np.zeros(p)
        b[:3] = b0 * math.sqrt(p)
        hits = 0
        for _ in range(trials):
            scales = np.where(np.arange(p) < 5, 8.0, 1.0)
            d = b + 0.05 * scales * rng.standard_normal((k, p))
            s = stats.summarize_group_errors(d @ d.T, d @ np.ones(p), float(p), 4)
            truth = np.linalg.norm(b) / math.sqrt(p)
            hits += s["rel_bias_ci_low"] - 1e-12 <= truth <= s["rel_bias_ci_high"] + 1e-12
        assert 0.90 <= hits / trials <= 1.0, (b0, hits / trials)


# ------------------------------------------------------------------------- J^T and the measurement
def test_batch_indices_are_simple_random_samples() -> None:
    idx = measure.batch_indices(50, 10, 2000, seed=3)
    assert idx.shape == (2000, 10)
    assert all(len(set(r.tolist())) == 10 for r in idx[:100])  # no repeats inside a batch
    freq = torch.bincount(idx.reshape(-1), minlength=50).double() / 2000
    assert torch.allclose(freq, torch.full((50,), 0.2, dtype=torch.float64), atol=0.03)
    assert torch.equal(idx, measure.batch_indices(50, 10, 2000, seed=3))


class _Net(torch.nn.Module):
    """A tiny frozen 'network' with BatchNorm (eval mode) to check the J^T trick."""

    def __init__(self) -> None:
        super().__init__()
        self.f = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.BatchNorm1d(7), torch.nn.Tanh(), torch.nn.Linear(7, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)


def _tiny_net_pool(n: int = 40) -> tuple[_Net, torch.Tensor, torch.Tensor]:
    torch.manual_seed(4)
    net = _Net().double()
    with torch.no_grad():  # non-trivial running statistics, then freeze (eval mode)
        net.f[1].running_mean.uniform_(-0.5, 0.5)
        net.f[1].running_var.uniform_(0.5, 2.0)
    net.eval()
    x1 = torch.randn(n, 5, dtype=torch.float64)
    return net, x1, x1 + 0.1 * torch.randn(n, 5, dtype=torch.float64)


def test_module_jt_equals_direct_parameter_gradient() -> None:
    """J^T (scattered embedding gradient) equals autograd through the network, for the pool and a batch."""
    net, x1, x2 = _tiny_net_pool()
    params = list(net.parameters())
    jt = measure.ModuleJT(net, params, x1, x2, chunk=7)
    loss = lambda a, b: u_offdiag(a) + u_offdiag(b) + ((a - b) ** 2).mean()  # noqa: E731
    ix = torch.tensor([3, 17, 5, 30, 22, 9])
    with torch.no_grad():
        z1, z2 = net(x1), net(x2)
    for rows in (torch.arange(40), ix):
        direct = torch.autograd.grad(loss(net(x1[rows]), net(x2[rows])), params)
        direct = torch.cat([g.reshape(-1) for g in direct])
        a = z1[rows].clone().requires_grad_(True)
        b = z2[rows].clone().requires_grad_(True)
        ga, gb = torch.autograd.grad(loss(a, b), (a, b))
        ct = torch.zeros(1, 40, 8, dtype=torch.float64)
        ct[0, rows, :4], ct[0, rows, 4:] = ga, gb
        assert torch.allclose(jt(ct)[0].double(), direct, rtol=1e-5, atol=1e-7)


def _rows(rows: list[dict], **sel) -> list[dict]:
    return [r for r in rows if all(r[k] == v for k, v in sel.items())]


def test_recovers_injected_bias_in_embedding_and_parameter_space() -> None:
    """An objective whose gradient is ĝ + c/B·v: the instrument finds ‖c(1/B−1/N)v‖ within its CI."""
    n, d = 96, 4
    z1, z2 = gaussian_pool(n, d, seed=5)
    g = torch.Generator().manual_seed(6)
    v = torch.randn(n, d, generator=g, dtype=torch.float64)
    obj = MeasuredObjective("injected", "-", Injected(v, z1, c=2.0))
    rows, _ = measure_all([obj], z1, z2, measure.identity_jt, [8, 32], 320, 8, seed=7, progress=False)
    g_star = measure.pool_target(obj, z1, z2).grad
    for r in rows:
        b = r["batch_size"]
        truth = 2.0 * (1 / b - 1 / n) * v.norm().item() / g_star.norm().item()
        for pre in ("", "emb_"):
            assert r[f"{pre}rel_bias_ci_low"] <= truth <= r[f"{pre}rel_bias_ci_high"], (b, pre, r[f"{pre}rel_bias"], truth)
            assert r[f"{pre}rel_bias"] == pytest.approx(truth, rel=0.35)
            assert r[f"{pre}rel_bias_ci_low"] > 0  # resolved, not just "consistent with anything"
    # the same without the injected term: the U-statistic alone is unbiased, CI covers 0
    clean = MeasuredObjective("u", "-", lambda a, b_: SimpleNamespace(loss=u_offdiag(a) + u_offdiag(b_), terms={}))
    rows, _ = measure_all([clean], z1, z2, measure.identity_jt, [8, 32], 320, 8, seed=7, progress=False)
    for r in rows:
        assert r["rel_bias_ci_low"] == 0.0 and r["rel_bias_sq"] - 2.4 * r["rel_bias_sq_se"] < 0


def test_parameter_space_through_network_recovers_known_bias() -> None:
    """Through a real (tiny) network: the bias in parameter space is J^T of the known embedding bias."""
    net, x1, x2 = _tiny_net_pool(n=64)
    with torch.no_grad():
        z1, z2 = net(x1), net(x2)
    jt = measure.ModuleJT(net, list(net.parameters()), x1, x2, chunk=32)
    v = torch.randn(64, 4, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    obj = MeasuredObjective("injected", "-", Injected(v, z1, c=3.0))
    rows, _ = measure_all([obj], z1, z2, jt, [8], 400, 8, seed=9, progress=False)
    g_star = jt(measure.pool_target(obj, z1, z2).grad.unsqueeze(0))[0].double()
    ct = torch.zeros(1, 64, 8, dtype=torch.float64)
    ct[0, :, :4] = 3.0 * (1 / 8 - 1 / 64) * v
    truth = (jt(ct)[0].double().norm() / g_star.norm()).item()
    r = rows[0]
    assert r["rel_bias_ci_low"] <= truth <= r["rel_bias_ci_high"]
    assert r["rel_bias"] == pytest.approx(truth, rel=0.35)


# --------------------------------------------------------------------- the real objectives (sanity)
def _cov_only(name: str, **extra):
    from bsstudy.objectives import build_objective

    params = dict(inv_coeff=0.0, var_coeff=0.0, cov_coeff=1.0, gamma=1.0, eps=1e-4)
    if name == "vicreg_unbiased":
        params.update(cov_target="offdiag", variance="jackknife", ema_beta=0.9)
    params.update(extra)
    return MeasuredObjective(name, "-", build_objective(name, **params))


@pytest.mark.slow
def test_covariance_only_unbiased_vs_plugin_on_gaussian_embeddings() -> None:
    """vicreg_unbiased (covariance only): CI covers 0. vicreg (covariance only): clearly positive, ~1/B."""
    n, d = 1024, 16
    z1, z2 = gaussian_pool(n, d, seed=10)
    objs = [_cov_only("vicreg_unbiased"), _cov_only("vicreg")]
    objs[0].scheme, objs[1].scheme = "u", "plug"  # distinct labels
    rows, _ = measure_all(objs, z1, z2, measure.identity_jt, [8, 32, 128], 256, 8, seed=12, progress=False)
    for r in _rows(rows, objective="vicreg_unbiased"):
        assert r["rel_bias_ci_low"] == 0.0, r  # consistent with zero bias
        assert r["rel_bias_ci_high"] < _rows(rows, objective="vicreg", batch_size=r["batch_size"])[0]["rel_bias"]
    plug = {r["batch_size"]: r for r in _rows(rows, objective="vicreg")}
    for b, r in plug.items():
        assert r["rel_bias_ci_low"] > 0, r  # resolved positive bias
        assert r["loss_bias_ci_low"] > 0  # the plug-in loss value is biased upwards
    # bias of a plug-in under sampling without replacement ∝ (1/B − 1/N): ratio 8→32 ≈ 4.1, 32→128 ≈ 4.4
    for b_small, b_big in ((8, 32), (32, 128)):
        expect = (1 / b_small - 1 / n) / (1 / b_big - 1 / n)
        ratio = plug[b_small]["rel_bias"] / plug[b_big]["rel_bias"]
        assert 0.6 * expect < ratio < 1.5 * expect, (b_small, b_big, ratio, expect)


# ---------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(batch_sizes=[2, 8]), "too small"),
        (dict(batch_sizes=[8, 4096]), "smaller than --pool"),
        (dict(repeats=100, groups=8), "multiple of --groups"),
        (dict(groups=2, repeats=8), "at least 3 groups"),
        (dict(level=1.5), "--level"),
    ],
)
def test_bad_settings_are_user_errors(kw: dict, msg: str) -> None:
    with pytest.raises(UserError, match=msg):
        check(Settings(**kw))


def test_cli_rejects_bad_input(capsys: pytest.CaptureFixture) -> None:
    from bsstudy.cli import main

    assert main(["bias", "--objectives", "vicreg,swav"]) == 2
    assert "unknown name 'swav'" in capsys.readouterr().err
    assert main(["bias", "--batch-sizes", "8,x"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err
    assert main(["bias", "--schemes", "median"]) == 2
    assert "unknown name 'median'" in capsys.readouterr().err



def test_cli_lists_come_from_the_registry(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """--schemes all = the registry's variance schemes; --objectives accepts every registered method."""
    from bsstudy import registry
    from bsstudy.bias import cli as bias_cli
    from bsstudy.cli import main

    seen = []

    def fake_run(s: Settings, progress: bool = True):
        seen.append(s)
        raise UserError("stopped before measuring")

    monkeypatch.setattr(bias_cli, "run", fake_run)
    names = ",".join(registry.method_names())
    assert main(["bias", "--schemes", "all", "--objectives", names, "--quiet"]) == 2
    assert "stopped before measuring" in capsys.readouterr().err
    assert seen[0].schemes == list(registry.variance_schemes())
    assert seen[0].objectives == list(registry.method_names())
    assert main(["bias"]) == 2  # the defaults: a subset of the registry, in their own order
    assert seen[1].objectives == ["vicreg", "vicreg_unbiased", "simclr"]
    assert seen[1].schemes == ["jackknife", "plugin"]


def test_bad_device_is_a_user_error_naming_the_flag() -> None:
    from bsstudy.bias.cli import run

    with pytest.raises(UserError, match="^--device: unknown device 'gpu7'"):
        run(Settings(device="gpu7", pool=64, batch_sizes=[8], repeats=6, groups=3), progress=False)


def test_labels_are_the_registry_spelling() -> None:
    from bsstudy.registry import method_label

    fn = lambda a, b: SimpleNamespace(loss=(a * b).sum(), terms={})  # noqa: E731
    assert MeasuredObjective("vicreg", "-", fn).label == method_label("vicreg") == "vicreg"
    assert (MeasuredObjective("vicreg_unbiased", "c4", fn).label == method_label("vicreg_unbiased", "c4")
            == "vicreg_unbiased[c4]")


# ------------------------------------------------------------------------------------------ figure
def _bias_table() -> "pd.DataFrame":
    """bias.csv-like rows: 'a' resolved at both B, 'b' resolved at B=8 only (CI reaches 0 at B=32)."""
    import pandas as pd

    rows = []
    for lab, vals in (("a", [(0.5, 0.3, 0.7), (0.2, 0.1, 0.3)]), ("b", [(0.4, 0.1, 0.6), (0.05, 0.0, 0.2)])):
        for b, (v, lo, hi) in zip((8, 32), vals):
            rows.append(dict(label=lab, batch_size=b, rel_bias=v, rel_bias_ci_low=lo, rel_bias_ci_high=hi,
                             noise_floor=0.1, emb_rel_bias=v, emb_rel_bias_ci_low=lo, emb_rel_bias_ci_high=hi,
                             emb_noise_floor=0.1))
    return pd.DataFrame(rows)


def test_resolved_rule() -> None:
    from bsstudy.bias.outputs import bias_resolved

    est = np.array([0.5, 0.5, 0.0, np.nan, 0.5, -0.1])
    lo = np.array([0.1, 0.0, 0.0, np.nan, np.nan, np.nan])
    assert bias_resolved(est, lo).tolist() == [True, False, False, False, True, False]


def test_bias_figure_series_bounds_and_noise_floor() -> None:
    import matplotlib.pyplot as plt

    from bsstudy.bias.outputs import draw_bias_figure

    fig, dropped = draw_bias_figure(_bias_table(), title="t")
    assert dropped == 0 and len(fig.axes) == 2  # parameter and embedding panels
    for ax in fig.axes:
        lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
        assert sorted(lines) == ["a", "b", "b (CI covers 0: upper bound)"]
        assert list(lines["a"].get_xdata()) == [8, 32] and list(lines["b"].get_xdata()) == [8]
        assert list(lines["b (CI covers 0: upper bound)"].get_ydata()) == [0.2]  # the CI's upper end
        assert sum(ln.get_linestyle() == ":" for ln in ax.get_lines()) == 2  # one noise floor per series
        assert ax.get_yscale() == "log"
        # 'a': a CI band over B = 8, 32; 'b' has one resolved point: an error bar (a band would have no width)
        assert len(ax.collections) == 2 and len(ax.containers) == 1
    plt.close(fig)
    # without a positive upper end a point is neither an estimate nor a bound
    t = _bias_table()
    t.loc[3, "rel_bias_ci_high"] = 0.0
    fig, dropped = draw_bias_figure(t)
    assert dropped == 1
    plt.close(fig)


def test_report_draws_the_same_bias_figure() -> None:
    """report.figures.fig_bias is draw_bias_figure on the study's bias.csv (same series, same points)."""
    import matplotlib.pyplot as plt

    from bsstudy.bias.outputs import draw_bias_figure
    from bsstudy.report.figures import fig_bias

    def series(fig):
        return [[(ln.get_label(), list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.get_lines()]
                for ax in fig.axes]

    (ours, d1), (report, d2) = draw_bias_figure(_bias_table()), fig_bias(_bias_table())
    assert series(ours) == series(report) and d1 == d2
    plt.close(ours)
    plt.close(report)

class _EmaScaled:
    """A stateful test objective: Σ_i Var_i(z1)/ema_i with ema an EMA of past batch variances."""

    def __init__(self, d: int, beta: float = 0.9) -> None:
        self.beta, self.ema = beta, torch.ones(d, dtype=torch.float64)
        self.seen: list[torch.Tensor] = []  # the state each call started from

    def state_dict(self) -> dict:
        return {"ema": self.ema.clone()}

    def load_state_dict(self, sd: dict) -> None:
        self.ema = sd["ema"].clone()

    def __call__(self, z1: torch.Tensor, z2: torch.Tensor) -> SimpleNamespace:
        self.seen.append(self.ema.clone())
        v = z1.var(0)  # 1/(n−1): unbiased for the pool's 1/(N−1) variance under SRS
        loss = (v / self.ema).sum()  # uses the state before this batch updates it
        self.ema = self.beta * self.ema + (1 - self.beta) * v.detach()
        return SimpleNamespace(loss=loss, terms={})


def test_stateful_objective_is_warmed_on_the_pool_and_frozen() -> None:
    n, d = 256, 3
    z1, z2 = gaussian_pool(n, d, seed=12)
    obj = MeasuredObjective("ema_test", "x", _EmaScaled(d))
    obj.notes["params"] = {"ema_beta": 0.9}
    rows, notes = measure_all([obj], z1, z2, measure.identity_jt, [8, 32], 64, 8, seed=13, warm_chunk=64, progress=False)
    assert notes["ema_test[x]"]["stateful"] and notes["ema_test[x]"]["warm_calls"] == 100
    assert torch.allclose(obj.state["ema"], z1.var(0), rtol=0.25)  # near the pool variance, not the init 1
    # the frozen state makes the loss linear in an unbiased variance: no bias; an unfrozen EMA would
    # change between batches and between the target and the batches
    for r in rows:
        assert r["rel_bias_ci_low"] == 0.0, r
    after_warm = obj.loss_fn.seen[100:]  # target + 2 x 64 batches
    assert len(after_warm) == 1 + 2 * 64
    assert all(torch.equal(s, obj.state["ema"]) for s in after_warm)
    assert rows[0]["loss_bias_ci_low"] <= 0 <= rows[0]["loss_bias_ci_high"]


TINY = ["model.width=4", "model.feature_dim=16", "method.projector.hidden_dim=32", "method.projector.out_dim=16"]


@pytest.mark.slow
def test_end_to_end_on_fashion_mnist_and_from_checkpoint(tmp_path) -> None:
    """Real data, real network (tiny widths): files, columns, figure; then the same from a checkpoint."""
    import pandas as pd
    from omegaconf import OmegaConf

    from bsstudy.bias import network
    from bsstudy.bias.cli import run
    from bsstudy.bias.outputs import CSV_COLUMNS
    from bsstudy.config import compose

    s = Settings(overrides=TINY, out=str(tmp_path / "rand"), batch_sizes=[8, 16], repeats=6, groups=3, pool=64,
                 schemes=["jackknife", "ema"], device="cpu", seed=3)
    df = run(s, progress=False)
    for f in ("bias.csv", "bias.json", "bias.png", "bias.pdf"):
        assert (tmp_path / "rand" / f).stat().st_size > 0
    csv = pd.read_csv(tmp_path / "rand" / "bias.csv")
    assert list(csv.columns[: len(CSV_COLUMNS)]) == list(CSV_COLUMNS)
    assert len(csv) == 4 * 2 and set(csv["label"]) == {"vicreg", "vicreg_unbiased[jackknife]",
                                                         "vicreg_unbiased[ema]", "simclr"}
    assert csv[["rel_bias", "rel_noise", "emb_rel_bias", "cosine"]].notna().all().all()
    meta = json.loads((tmp_path / "rand" / "bias.json").read_text())
    assert meta["settings"]["seed"] == 3 and meta["objectives"]["vicreg_unbiased[ema]"]["stateful"]
    assert meta["network"]["batchnorm"].endswith("calibrated on the pool")
    assert df["loss_pool"].notna().all()

    # a trainer-style run dir: config.yaml + checkpoints/last.pt with {"model": state_dict}
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    cfg = compose(TINY)
    OmegaConf.save(cfg, run_dir / "config.yaml")
    model = network.build_model(cfg, 11, torch.device("cpu"), None)
    torch.save({"model": model.state_dict(), "epoch": 1}, run_dir / "checkpoints" / "last.pt")
    s2 = Settings(out=str(tmp_path / "ck"), batch_sizes=[8], repeats=6, groups=3, pool=64,
                  objectives=["vicreg"], checkpoint=str(run_dir / "checkpoints" / "last.pt"), device="cpu")
    df2 = run(s2, progress=False)
    assert len(df2) == 1
    meta2 = json.loads((tmp_path / "ck" / "bias.json").read_text())
    assert meta2["network"]["init"] == "checkpoint"
    # weights that do not fit the config are a one-line UserError
    torch.save({"model": {"nope": torch.zeros(1)}}, run_dir / "checkpoints" / "last.pt")
    with pytest.raises(UserError, match="do not fit"):
        run(s2, progress=False)
    with pytest.raises(UserError, match="no such file"):
        run(Settings(checkpoint=str(tmp_path / "missing.pt"), pool=64, batch_sizes=[8], repeats=6, groups=3),
            progress=False)


@pytest.mark.parametrize("name", ["simsiam", "byol", "mocov2", "sogclr"])
def test_stateful_objectives_are_refused_with_one_line(name, capsys):
    from bsstudy.cli import main

    assert main(["bias", "--objectives", name, "--out", "/nonexistent/never-written"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err and "not measured" in err
