"""bias.png / bias.pdf: relative gradient bias against batch size (log–log), with CIs and noise floors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def plot(df: pd.DataFrame, out_dir: Path, title: str = "") -> list[Path]:
    """Draw the figure from bias.csv rows; returns the written paths.

    One panel per gradient space present (parameters, embeddings). Filled markers: noise-corrected
    bias with its CI (error bars); where the CI reaches 0 the bias is not resolved and an open
    down-triangle marks the CI's upper end instead. Dotted: the noise floor sqrt(tr Cov/R)/‖g*‖,
    where the raw error ‖mean ĝ − g*‖ would sit with zero bias.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from ..io import atomic_write_bytes

    spaces = [("", "parameter gradient")] if "rel_bias" in df.columns and df["rel_bias"].notna().any() else []
    spaces.append(("emb_", "embedding gradient"))
    labels = list(dict.fromkeys(df["label"]))
    palette = dict(zip(labels, sns.color_palette("colorblind", len(labels))))
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, len(spaces), figsize=(5.2 * len(spaces), 4.2), squeeze=False)
    for ax, (pre, name) in zip(axes[0], spaces):
        for lab in labels:
            d = df[df["label"] == lab].sort_values("batch_size")
            col = palette[lab]
            b = d["batch_size"].to_numpy(float)
            est = d[f"{pre}rel_bias"].to_numpy(float)
            lo = d[f"{pre}rel_bias_ci_low"].to_numpy(float)
            hi = d[f"{pre}rel_bias_ci_high"].to_numpy(float)
            res = lo > 0  # resolved: the CI excludes zero bias
            ax.plot(b[res], est[res], "-o", color=col, label=lab if res.any() else None, ms=4, lw=1.3)
            ax.errorbar(b[res], est[res], yerr=[est[res] - lo[res], hi[res] - est[res]], fmt="none",
                        ecolor=col, capsize=2, lw=1)
            if (~res).any():
                ax.plot(b[~res], hi[~res], "v", mfc="none", color=col, ms=6,
                        label=None if res.any() else f"{lab} (upper bound)")
            ax.plot(b, d[f"{pre}noise_floor"].to_numpy(float), ":", color=col, lw=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size B")
        ax.set_ylabel("relative bias ‖E ĝ_B − g*‖ / ‖g*‖")
        ax.set_title(f"{name}: bias (solid, 95% CI), noise floor (dotted)", fontsize=8)
        vals = np.concatenate([df[f"{pre}rel_bias_ci_high"].to_numpy(float), df[f"{pre}noise_floor"].to_numpy(float)])
        vals = vals[np.isfinite(vals) & (vals > 0)]
        if vals.size:
            ax.set_ylim(vals.min() / 3, vals.max() * 2)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    written = []
    import io

    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight")
        path = Path(out_dir) / f"bias.{ext}"
        atomic_write_bytes(path, buf.getvalue())
        written.append(path)
    plt.close(fig)
    return written
