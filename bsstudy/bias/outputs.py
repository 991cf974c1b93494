"""What ``bsstudy bias`` writes: bias.csv and bias.json, the text table it prints, and the bias figure.

``draw_bias_figure`` is the one bias figure: ``bsstudy bias`` saves it as bias.png/pdf and ``bsstudy
report`` (``report.figures.fig_bias``) draws it from the study's bias/bias.csv. ``bias_resolved`` is the
one rule for when a bias estimate counts as resolved (docs/bias.md, "Figure").
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Leading columns of bias.csv (contract with bsstudy.report, which reads results/<study>/bias/bias.csv).
CSV_COLUMNS = (
    "objective", "scheme", "label", "batch_size", "repeats", "groups", "pool",
    "rel_bias", "rel_bias_ci_low", "rel_bias_ci_high", "cosine", "rel_noise", "loss_bias",
    "loss_bias_ci_low", "loss_bias_ci_high", "noise_floor", "rel_bias_raw", "rel_bias_sq",
    "rel_bias_sq_se", "cosine_corrected", "bias_along", "bias_along_ci_low", "bias_along_ci_high",
    "loss", "loss_pool",
)


def write_outputs(rows: list[dict], out: Path, meta: dict) -> pd.DataFrame:
    """Write bias.csv and bias.json (atomically); return the CSV table."""
    from ..io import atomic_write_json, atomic_write_text, json_finite

    flat = [{k: v for k, v in r.items() if k != "terms_bias"} for r in rows]
    df = pd.DataFrame(flat)
    cols = [c for c in CSV_COLUMNS if c in df.columns]
    cols += sorted(c for c in df.columns if c not in cols)
    df = df[cols]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bias.csv", df.to_csv(index=False, float_format="%.6g"))
    meta = dict(meta, schema=1, csv_columns=cols,
                terms_bias=[{"label": r["label"], "batch_size": r["batch_size"], "terms": r["terms_bias"]}
                            for r in rows])
    atomic_write_json(out / "bias.json", json_finite(meta))
    return df


def bias_text_table(df: pd.DataFrame) -> str:
    """The table ``bsstudy bias`` prints: one line per objective/scheme, one column per batch size."""
    lines = []
    bs = sorted(df["batch_size"].unique())
    space = "rel_bias" if "rel_bias" in df.columns and df["rel_bias"].notna().any() else "emb_rel_bias"
    lines.append(f"relative gradient bias ({'parameters' if space == 'rel_bias' else 'embeddings'}), "
                 f"estimate [95% CI]; noise floor in ()")
    lines.append("objective".ljust(30) + "".join(f"B={b}".ljust(30) for b in bs))
    for lab in dict.fromkeys(df["label"]):
        d = df[df["label"] == lab].set_index("batch_size")
        pre = space[:-len("rel_bias")]
        cells = []
        for b in bs:
            r = d.loc[b]
            cells.append(f"{r[space]:.3g} [{r[space + '_ci_low']:.2g},{r[space + '_ci_high']:.2g}] "
                         f"({r[pre + 'noise_floor']:.2g})".ljust(30))
        lines.append(lab.ljust(30) + "".join(cells))
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- figure
def bias_resolved(estimate: np.ndarray, ci_low: np.ndarray) -> np.ndarray:
    """Which bias estimates are resolved: positive and finite, with a confidence interval that excludes 0
    (lower end > 0). A row without an interval (NaN, or a bias.csv without interval columns) is judged
    on its estimate alone. On bsstudy's own bias.csv this is exactly "the CI's lower end is > 0", since
    ``rel_bias_ci_low`` <= ``rel_bias`` and both are NaN together."""
    est = np.asarray(estimate, dtype=float)
    lo = np.asarray(ci_low, dtype=float)
    return np.isfinite(est) & (est > 0) & ~(np.isfinite(lo) & (lo <= 0))


def _column(d: pd.DataFrame, name: str) -> np.ndarray:
    """Column ``name`` as floats; all NaN when the table has no such column."""
    if name not in d.columns:
        return np.full(len(d), np.nan)
    return pd.to_numeric(d[name], errors="coerce").to_numpy(dtype=float)


def draw_bias_figure(df: pd.DataFrame, title: str = "") -> tuple[Any, int]:
    """The bias figure from bias.csv rows (columns ``label``, ``batch_size``, ``rel_bias`` and, when
    present, ``rel_bias_ci_low|high``, ``noise_floor`` and the ``emb_`` versions).

    One log-log panel per gradient space present (parameters, embeddings), one series per label in
    order of appearance. Resolved estimates (:func:`bias_resolved`): solid line with markers and a CI
    band (an error bar where a resolved point has no resolved neighbour); the others, where the CI's
    upper end is positive: an open down-triangle at that upper end (an upper bound). Dotted: the noise
    floor sqrt(tr Cov/R)/‖g*‖, where the raw error would sit with zero bias. Returns (figure, number of
    points drawn neither as an estimate nor as a bound).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spaces = [("", "parameter gradient")] if "rel_bias" in df.columns and df["rel_bias"].notna().any() else []
    if "emb_rel_bias" in df.columns:
        spaces.append(("emb_", "embedding gradient"))
    spaces = spaces or [("", "parameter gradient")]
    labels = list(dict.fromkeys(df["label"].astype(str)))
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {lab: cycle[i % len(cycle)] for i, lab in enumerate(labels)}
    batch_sizes = sorted({int(b) for b in df["batch_size"]})
    fig, axes = plt.subplots(1, len(spaces), figsize=(5.2 * len(spaces), 4.2), squeeze=False)
    dropped = 0
    for ax, (pre, name) in zip(axes[0], spaces):
        for lab in labels:
            d = df[df["label"].astype(str) == lab].sort_values("batch_size")
            col = color[lab]
            b = d["batch_size"].to_numpy(float)
            est, lo, hi = (_column(d, f"{pre}rel_bias{s}") for s in ("", "_ci_low", "_ci_high"))
            res = bias_resolved(est, lo)
            bound = ~res & np.isfinite(hi) & (hi > 0)
            dropped += int((~res & ~bound).sum())
            if res.any():
                ax.plot(b[res], est[res], "-o", color=col, label=lab, ms=4, lw=1.3)
            band = res & np.isfinite(lo) & np.isfinite(hi)
            neighbour = np.zeros_like(band)
            neighbour[1:] |= band[:-1]
            neighbour[:-1] |= band[1:]
            if (band & neighbour).any():  # runs of >= 2 adjacent batch sizes: a band
                ax.fill_between(b, lo, hi, where=band & neighbour, color=col, alpha=0.15, linewidth=0)
            lone = band & ~neighbour  # a band of one point has no width: an error bar instead
            if lone.any():
                ax.errorbar(b[lone], est[lone], yerr=[est[lone] - lo[lone], hi[lone] - est[lone]], fmt="none",
                            ecolor=col, lw=1, capsize=0)
            if bound.any():
                ax.plot(b[bound], hi[bound], linestyle="none", marker="v", mfc="none", color=col, ms=6,
                        label=f"{lab} (CI covers 0: upper bound)")
            floor = _column(d, f"{pre}noise_floor")
            if np.isfinite(floor).any():
                ax.plot(b, floor, ":", color=col, lw=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(batch_sizes)
        ax.set_xticklabels([str(v) for v in batch_sizes], rotation=45 if len(batch_sizes) > 5 else 0)
        ax.set_xlabel("batch size B")
        ax.set_ylabel("relative bias ‖E ĝ_B − g*‖ / ‖g*‖")
        ax.set_title(f"{name}: bias (solid, CI band), noise floor (dotted)", fontsize=8)
        ax.grid(alpha=0.3, which="both")
        vals = np.concatenate([_column(df, f"{pre}rel_bias{s}") for s in ("", "_ci_high")]
                              + [_column(df, f"{pre}noise_floor")])
        vals = vals[np.isfinite(vals) & (vals > 0)]
        if vals.size:
            ax.set_ylim(vals.min() / 3, vals.max() * 2)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=6, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig, dropped


def write_bias_figure(df: pd.DataFrame, out_dir: Path, title: str = "") -> list[Path]:
    """Draw :func:`draw_bias_figure` into ``out_dir``/bias.png and bias.pdf (atomically, no dates in the
    files); returns the written paths."""
    import matplotlib.pyplot as plt

    from ..io import atomic_write_bytes

    fig, _ = draw_bias_figure(df, title)
    written = []
    for ext, metadata in (("png", {"Software": None}),
                          ("pdf", {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None})):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight", metadata=metadata)
        path = Path(out_dir) / f"bias.{ext}"
        atomic_write_bytes(path, buf.getvalue())
        written.append(path)
    plt.close(fig)
    return written
