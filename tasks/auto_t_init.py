"""Adaptive tau_init (`--t-init auto`): per clip, the largest tau_init (the most faithful start) at
which the run turns the guide into the target, judged by the instrument probe (tasks/probe.py)
on the denoiser's own estimate x̂0 = D(x_start; sigma_start) -- one denoiser call per window and
candidate, the preview Diff-TONE reads along its reverse pass (Kim et al. 2024), where the
warm-init paper leaves tau_init a per-task heuristic.

The search is a bisection over the descending candidates: P(target | x̂0) grows as tau_init falls
(more noise, less guide), so ceil(log2(K + 1)) previews per clip find the first candidate that
passes, instead of K. A clip whose previews never pass gets the previewed candidate where P was
highest (the estimate blurs at the lowest candidates and the probe's P falls again there).
Each preview starts from the very state the run will start from (same windows, same start noise),
and the chosen run is the fixed-tau_init run at that candidate, bit for bit."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from schemas.probe import AutoStart
from tasks.diffusion.precond import Denoiser
from tasks.diffusion.warm import warm_start_state
from tasks.diffusion.windows import Window

# x̂0 windows [n, bins, W] in the model's space -> the probe's P(target) per window [n]
ProbeFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AutoChoice:
    t_init: float           # the candidate chosen for the clip
    p_target: float         # the probe's P(target | x̂0) there (mean over the clip's windows)
    passed: bool            # P reached the threshold at some candidate
    previews: int           # candidates previewed for this clip


def _denoised(denoiser: Denoiser, windows: Sequence[Window], sigmas: Sequence[float], lam: float, batch: int,
              pad_to: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(guides, x̂0, sigmas) per batch: each window started at its own sigma, x = guide + lam*sigma*eps,
    x̂0 = D(x; sigma). Calls see fixed batches of `pad_to` windows (zero-padded), as the transform's do."""
    size = pad_to or batch
    for b in range(0, len(windows), batch):
        chunk = windows[b:b + batch]
        g = torch.stack([w.guide for w in chunk])
        s = torch.tensor(list(sigmas[b:b + batch]), dtype=g.dtype)
        x = torch.stack([warm_start_state(w.guide, float(si), lam, w.start_noise) for w, si in zip(chunk, s)])
        pad = size - len(chunk)
        sp = s
        if pad:
            x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
            sp = torch.cat([s, s.new_full((pad,), max(float(s.max()), 1e-3))])
        with torch.no_grad():
            yield g, denoiser(x, sp.clamp_min(1e-6))[:len(chunk)], s


def preview_p(denoiser: Denoiser, windows: Sequence[Window], sigmas: Sequence[float], lam: float, probe: ProbeFn,
              batch: int, pad_to: int | None = None) -> torch.Tensor:
    """P(target | x̂0) of each window started at its own sigma."""
    out = [probe(x0) for _, x0, _ in _denoised(denoiser, windows, sigmas, lam, batch, pad_to)]
    return torch.cat(out) if out else torch.zeros(0)


def choose_t_init(denoiser: Denoiser, windows: Sequence[Window], n_items: int, auto: AutoStart,
                  sigma_of: Callable[[float], float], lam: float, probe: ProbeFn, *, batch: int,
                  pad_to: int | None = None) -> list[AutoChoice]:
    """One AutoChoice per item: the bisection above, every round batched over all items still open."""
    cands = auto.candidates  # descending (AutoStart sorts them)
    k = len(cands)
    lo, hi = [0] * n_items, [k] * n_items
    seen: list[dict[int, float]] = [{} for _ in range(n_items)]
    by_item: list[list[Window]] = [[] for _ in range(n_items)]
    for w in windows:
        by_item[w.item].append(w)
    while True:
        open_items = [i for i in range(n_items) if lo[i] < hi[i]]
        if not open_items:
            break
        mids = {i: (lo[i] + hi[i]) // 2 for i in open_items}
        ws = [w for i in open_items for w in by_item[i]]
        p = preview_p(denoiser, ws, [sigma_of(cands[mids[w.item]]) for w in ws], lam, probe, batch, pad_to)
        at = 0
        for i in open_items:
            n = len(by_item[i])
            pi = float(p[at:at + n].mean())
            at += n
            seen[i][mids[i]] = pi
            if pi >= auto.threshold:
                hi[i] = mids[i]
            else:
                lo[i] = mids[i] + 1
    choices = []
    for i in range(n_items):
        if lo[i] < k:
            choices.append(AutoChoice(cands[lo[i]], seen[i][lo[i]], True, len(seen[i])))
        else:
            best = max(seen[i], key=lambda j: (seen[i][j], -j))
            choices.append(AutoChoice(cands[best], seen[i][best], False, len(seen[i])))
    return choices


def residual_ratio(denoiser: Denoiser, windows: Sequence[Window], sigmas: Sequence[float], batch: int,
                   pad_to: int | None = None) -> torch.Tensor:
    """rms(g - D(g; sigma)) / sigma per window: how much of sigma the denoiser removes when the guide
    itself is taken as the noisy state at sigma (lambda 0)."""
    out = [(g - x0).pow(2).mean(dim=tuple(range(1, g.ndim))).sqrt() / s
           for g, x0, s in _denoised(denoiser, windows, sigmas, 0.0, batch, pad_to)]
    return torch.cat(out) if out else torch.zeros(0)


def choose_by_noise(denoiser: Denoiser, windows: Sequence[Window], n_items: int, auto: AutoStart,
                    sigma_of: Callable[[float], float], *, batch: int, pad_to: int | None = None) -> list[AutoChoice]:
    """DMID-style (the image-denoising recipe that starts the reverse process where the model's
    noise level matches the input's estimated degradation): per clip, the largest candidate sigma_start at which the denoiser, handed the guide as
    a state at that sigma, still removes at least `residual_ratio` of sigma. A clean input sits near
    the data, so only small sigmas pass and its start stays faithful; a degraded one is off the data
    by its degradation's size, so larger sigmas pass. Every candidate is one call per window; no
    probe. `p_target` records the residual ratio at the chosen start."""
    cands = auto.candidates
    sig = [sigma_of(t) for t in cands]
    ratios = [residual_ratio(denoiser, windows, [s] * len(windows), batch, pad_to) for s in sig]
    item = torch.tensor([w.item for w in windows])
    choices = []
    for i in range(n_items):
        mine = item == i
        r = [float(rk[mine].mean()) for rk in ratios]
        passing = [k for k in range(len(cands)) if r[k] >= auto.residual_ratio]
        k = max(passing, key=lambda k: sig[k]) if passing else 0  # none: the most faithful candidate
        choices.append(AutoChoice(cands[k], r[k], bool(passing), len(cands)))
    return choices
