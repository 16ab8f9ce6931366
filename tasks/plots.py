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
    """Log-mel images side by side, [n_mels, frames] each, with a shared colour scale."""
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
