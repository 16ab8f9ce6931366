"""Figures a person would rather look at than read: loss curves and spectrograms, as PNG bytes
(written through the storage module by the caller)."""
from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on workers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def loss_curve_png(steps: Sequence[int], losses: Sequence[float], *, val_steps: Sequence[int] = (),
                   val_losses: Sequence[float] = (), title: str = "EDM loss") -> bytes:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(steps, losses, lw=0.6, alpha=0.5, label="train (per step)")
    if len(losses) >= 20:
        k = max(5, len(losses) // 50)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(list(steps)[k - 1:], smooth, lw=1.5, label=f"train ({k}-step mean)")
    if len(val_losses):
        ax.plot(val_steps, val_losses, "o-", label="validation (EMA)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("weighted loss")
    ax.set_title(title)
    ax.legend()
    return _png(fig)


def spectrograms_png(logmels: Sequence[np.ndarray], titles: Sequence[str], *, frame_rate_hz: float,
                     f_max_hz: float) -> bytes:
    """Log-mel images side by side, [n_mels, frames] each, with a shared colour scale (training
    previews: a few short samples)."""
    lo = min(float(np.percentile(m, 1)) for m in logmels)
    hi = max(float(m.max()) for m in logmels)
    fig, axes = plt.subplots(1, len(logmels), figsize=(3.2 * len(logmels), 3), squeeze=False)
    for ax, m, t in zip(axes[0], logmels, titles):
        ax.imshow(m, origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma",
                  extent=(0, m.shape[1] / frame_rate_hz, 0, m.shape[0]))
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("s")
        ax.set_ylabel(f"mel bin (0-{f_max_hz / 1000:.0f} kHz)")
    return _png(fig)


def spectrogram_panels_png(logmels: Sequence[np.ndarray], *, frame_rate_hz: float, f_max_hz: float) -> list[bytes]:
    """One PNG per log-mel ([n_mels, frames]), all on one colour scale, each wide enough to read
    (its label is the page's caption, so no title can overlap a neighbour's panel)."""
    lo = min(float(np.percentile(m, 1)) for m in logmels)
    hi = max(float(m.max()) for m in logmels)
    out = []
    for m in logmels:
        fig, ax = plt.subplots(figsize=(4.4, 2.6))
        ax.imshow(m, origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma",
                  extent=(0, m.shape[1] / frame_rate_hz, 0, m.shape[0]))
        ax.set_xlabel("time (s)", fontsize=8)
        ax.set_ylabel(f"mel bin (0–{f_max_hz / 1000:.0f} kHz)", fontsize=8)
        ax.tick_params(labelsize=7)
        out.append(_png(fig))
    return out


def tradeoff_png(curves: dict[str, list[tuple[float, float, float]]], *, recommended: dict[str, float] | None = None,
                 embedding: str = "musicnn-msd", anchors: dict[str, tuple[float, float]] | None = None,
                 intervals: dict[str, dict[float, tuple]] | None = None,
                 anchor_intervals: dict[str, tuple[float | None, float | None]] | None = None) -> bytes:
    """Three panels per sweep: JD vs tau_init, FAD vs tau_init and FAD vs JD, one line per lambda.
    `curves[label] = [(t_init, jd, fad), ...]`; `recommended[label]` marks the chosen tau_init;
    `anchors[name] = (jd, fad)` (plain generation, the true target) are drawn as levels: a
    dashed FAD line on the realism panel and a marker on the trade-off panel, with the band of
    its FAD's 95 % interval (`anchor_intervals[name] = (lo, hi)`) shaded. `intervals[label][x] =
    (jd_lo, jd_hi, fad_lo, fad_hi)` draws each grid point's 95 % intervals as error bars."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for k, (name, (jd_a, fad_a)) in enumerate((anchors or {}).items()):
        color = ("dimgray", "seagreen", "darkorange")[k % 3]
        axes[1].axhline(fad_a, ls="--", lw=1, color=color, label=name)
        lo, hi = (anchor_intervals or {}).get(name, (None, None))
        if lo is not None and hi is not None:
            axes[1].axhspan(lo, hi, color=color, alpha=0.12, lw=0)
            axes[2].axhspan(lo, hi, color=color, alpha=0.12, lw=0)
        axes[2].plot([jd_a], [fad_a], "D", ms=8, color=color, label=name)
    if anchors:
        axes[1].legend(fontsize=7)
        axes[2].legend(fontsize=7)
    for label, pts in curves.items():
        pts = sorted(pts)
        t, jd, fad = (np.array(v, dtype=float) for v in zip(*pts))
        line = axes[0].plot(t, jd, "o-", label=label)[0]
        axes[1].plot(t, fad, "o-", label=label, color=line.get_color())
        axes[2].plot(jd, fad, "o-", label=label, color=line.get_color())
        for x, j, f in pts:
            b = (intervals or {}).get(label, {}).get(x)
            if b is None or None in b:
                continue
            jl, jh, fl, fh = b
            kw = dict(fmt="none", ecolor=line.get_color(), elinewidth=1, capsize=2, alpha=0.7)
            axes[0].errorbar([x], [j], yerr=[[j - jl], [jh - j]], **kw)
            axes[1].errorbar([x], [f], yerr=[[f - fl], [fh - f]], **kw)
            axes[2].errorbar([j], [f], xerr=[[j - jl], [jh - j]], yerr=[[f - fl], [fh - f]], **kw)
        for ti, a, b in pts:
            axes[2].annotate(f"{ti:g}", (a, b), textcoords="offset points", xytext=(4, 3), fontsize=7)
        if recommended and label in recommended:
            k = int(np.argmin(np.abs(t - recommended[label])))
            for ax, (x, y) in zip(axes, ((t[k], jd[k]), (t[k], fad[k]), (jd[k], fad[k]))):
                ax.plot([x], [y], "*", ms=14, color="crimson", zorder=5)
    axes[0].set(xlabel="τ_init (fraction of reverse steps skipped)", ylabel="pitch JD vs guide", title="faithfulness")
    axes[1].set(xlabel="τ_init", ylabel=f"FAD ({embedding})", title="realism")
    axes[2].set(xlabel="pitch JD vs guide (lower: more faithful)", ylabel=f"FAD ({embedding}) (lower: more real)",
                title="trade-off (★ recommended)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(title="λ")
    return _png(fig)


def methods_png(points: dict[str, list[tuple[str, float, float, float, float, float, float]]], *,
                embedding: str = "musicnn-msd") -> bytes:
    """FAD against JD for every method, one panel per task, with 95 % intervals as error bars.
    `points[task] = [(method, jd, jd_lo, jd_hi, fad, fad_lo, fad_hi), ...]` (a bound may be None)."""
    tasks = list(points) or ["(no rows)"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.2 * len(tasks), 4.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for k, (label, jd, jl, jh, fad, fl, fh) in enumerate(points.get(task, [])):
            xerr = [[jd - jl], [jh - jd]] if jl is not None and jh is not None else None
            yerr = [[fad - fl], [fh - fad]] if fl is not None and fh is not None else None
            ax.errorbar([jd], [fad], xerr=xerr, yerr=yerr, fmt="os^vD<>ph*"[k % 10], ms=7, capsize=3,
                        color=plt.cm.tab10(k % 10), label=label)
        ax.set(xlabel="pitch JD vs guide (lower: more faithful)", ylabel=f"FAD ({embedding}) vs real target (lower: more real)",
               title=task)
        ax.grid(alpha=0.3)
        if points.get(task):
            ax.legend(fontsize=7, loc="best")
    return _png(fig)
