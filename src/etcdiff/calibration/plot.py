"""A picture of a tolerance search: d_bar and s_bar over the step index, the change point and tau."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


#: The ETC paper's printed tolerance search on FLUX.1-dev (50 steps): anchor points (fraction of the run, value).
#: Only these values are printed (where the curves start, turn and end); the plot marks them, it does not join them.
PAPER_FLUX = {
    "d": [(0.0, 0.443), (4 / 48, 0.1269), (0.5, 0.025), (1.0, 0.254)],  # d_bar[4] = tau = 0.1269
    "s": [(0.0, 0.61), (4 / 48, 0.988), (1.0, 0.747)],  # change point r = 4
}


def plot_profile(profile: Any, path: str | os.PathLike | None = None, paper_flux: bool = False) -> Path:
    """Draw ``profile`` as a PNG (two panels sharing the step axis) and return its path.

    ``paper_flux``: also draw the ETC paper's printed FLUX search (:data:`PAPER_FLUX`, its printed values drawn
    as grey squares, stretched to this run's length), for a FLUX-family model.

    Default path: next to the profile's JSON file with the suffix ``.png``. Uses matplotlib's Agg canvas
    directly, so it neither needs a display nor changes the pyplot backend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if path is None:
        if profile.path is None:
            raise ValueError("plot_profile: the profile was not saved yet; pass the PNG path.")
        path = Path(profile.path).with_suffix(".png")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    d = np.asarray(profile.d_bar, dtype=float)
    s = np.asarray(profile.s_bar, dtype=float)
    i = np.arange(d.size)
    r = int(profile.change_point)

    fig = Figure(figsize=(8.0, 6.0), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax_d, ax_s = fig.subplots(2, 1, sharex=True)

    ax_d.plot(i, d, "-o", ms=3, color="tab:blue", label=r"$\bar d_i$ = mean|eps$_{i+1}$ - eps$_i$|")
    ax_d.axhline(profile.tau, color="tab:red", ls="--", lw=1, label=f"tau = {profile.tau:.4g}")
    ax_d.plot([r], [d[r]], "o", ms=8, mfc="none", mec="tab:red", mew=2)
    ax_d.set_ylabel("output difference")
    if d.min() > 0 and d.max() / d.min() > 20:
        ax_d.set_yscale("log")
    ax_d.legend(loc="best", fontsize=8)

    ax_s.plot(i, s, "-o", ms=3, color="tab:green", label=r"$\bar s_i$ = SSIM(x$_{final}$, x$_{final}$ + b$_i$)")
    ax_s.plot([r], [s[r]], "o", ms=8, mfc="none", mec="tab:red", mew=2)
    ax_s.set_ylabel("similarity (SSIM)")
    ax_s.set_xlabel("step index i")
    if paper_flux:
        last = d.size - 1
        for ax, key in ((ax_d, "d"), (ax_s, "s")):
            xs, ys = zip(*[(f * last, v) for f, v in PAPER_FLUX[key]])
            ax.plot(xs, ys, "s", ms=6, color="0.45", label="ETC paper, FLUX.1-dev: its printed values (r = 4)")
            ax.legend(loc="best", fontsize=8)
    ax_s.legend(loc="best", fontsize=8)

    for ax in (ax_d, ax_s):
        ax.axvspan(-0.5, r + 0.5, color="0.93", zorder=0)  # the first segment of the change-point search
        ax.axvline(r + 0.5, color="tab:red", lw=1)
        ax.grid(alpha=0.3)
    right = r > d.size / 2
    ax_s.annotate(f"change point r = {r}", xy=(r + 0.5, 0.5), xycoords=("data", "axes fraction"),
                  xytext=(-6 if right else 6, 0), textcoords="offset points", ha="right" if right else "left",
                  color="tab:red", fontsize=8)
    ax_d.set_xlim(-0.5, d.size - 0.5)

    fig.suptitle(
        f"ETC tolerance search: {profile.identity}, {profile.steps} steps, {len(profile.prompts)} prompts, "
        f"seed {profile.seed}\ntau = d_bar[{r}] = {profile.tau:.4g}",
        fontsize=10,
    )
    fig.savefig(path, format="png")
    return path


def _series(settings: Any, prefix: str = "") -> list[tuple[str, np.ndarray]]:
    """Every numeric sequence of three or more values inside a (nested) settings document."""
    out: list[tuple[str, np.ndarray]] = []
    if isinstance(settings, dict):
        for key, value in settings.items():
            out += _series(value, f"{prefix}{key}." if not isinstance(value, (list, tuple)) else f"{prefix}{key}")
    elif isinstance(settings, (list, tuple)) and len(settings) >= 3:
        try:
            arr = np.asarray(settings, dtype=float)
        except (TypeError, ValueError):
            return out
        if arr.ndim == 1:
            out.append((prefix.rstrip("."), arr))
        elif arr.ndim == 2 and arr.shape[0] <= 8:
            out += [(f"{prefix.rstrip('.')}[{i}]", row) for i, row in enumerate(arr)]
    return out


def plot_fitted(settings: dict[str, Any], path: str | os.PathLike, title: str = "") -> Path | None:
    """Draw every per-step table a calibration fitted (schedules, coefficients, ratios, sensitivities): one
    panel per numeric sequence; ``None`` when there is nothing to draw."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = _series(settings)[:8]
    if not series:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(7, 1.8 * len(series) + 0.6))
    FigureCanvasAgg(fig)
    for k, (name, values) in enumerate(series, 1):
        ax = fig.add_subplot(len(series), 1, k)
        ax.plot(np.arange(values.size), values, marker=".", lw=1)
        ax.set_ylabel(name, fontsize=7)
        ax.tick_params(labelsize=7)
    fig.axes[-1].set_xlabel("index (step)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
