"""Warm initialization (Andrade & Schlecht; conventions in docs/design.md): run the reverse process
from the guide instead of from noise. tau_init (t_init) is the fraction of the N reverse steps
skipped from the noise end; the run starts at Karras-grid index round(t_init * N) from
x = guide + lambda * sigma_start * eps."""
from __future__ import annotations

import math

import torch

from schemas.diffusion import EDMConfig, SamplerConfig, WarmStartConfig
from tasks.diffusion.precond import Denoiser
from tasks.diffusion.samplers import SAMPLERS, Callback, NoiseFn, karras_sigmas


def start_index(t_init: float, num_steps: int) -> int:
    """round(t_init * N), halves rounded up (Python's round() would round 2.5 to 2)."""
    if not 0 <= t_init <= 1:
        raise ValueError(f"t_init must lie in [0, 1], got {t_init}")
    return int(math.floor(t_init * num_steps + 0.5 + 1e-9))


def warm_sigmas(sampler: SamplerConfig, edm: EDMConfig, warm: WarmStartConfig | None = None) -> torch.Tensor:
    """The sigma grid a (warm) run follows; its first value is sigma_start. No warm config:
    the full grid (cold generation). t_init picks sigma_start on the N grid; with K
    (solver_steps) the run then follows K Karras steps from sigma_start (EDM eq. 5 with
    sigma_max := sigma_start), else the N grid's remaining steps."""
    full = karras_sigmas(sampler.steps, edm.sigma_min, edm.sigma_max, sampler.rho)
    if warm is None:
        return full
    if warm.t_init is not None:
        i = start_index(warm.t_init, sampler.steps)
        if sampler.solver_steps is None or i == 0 or sampler.solver_steps >= sampler.steps - i:
            return full[i:]  # K never buys more evaluations than the N grid's own tail
        s0 = float(full[i])
    else:
        s0 = float(warm.sigma_start)  # type: ignore[arg-type]
    if s0 == 0:
        return torch.zeros(1, dtype=torch.float64)
    if s0 <= edm.sigma_min:
        return torch.tensor([s0, 0.0], dtype=torch.float64)
    return karras_sigmas(sampler.solver_steps or sampler.steps, edm.sigma_min, s0, sampler.rho)


def warm_start_state(guide: torch.Tensor, sigma_start: float, lam: float, eps: torch.Tensor) -> torch.Tensor:
    """x = guide + lambda * sigma_start * eps. With nothing to add the guide is returned as is
    (adding 0 would turn -0.0 into +0.0: tau_init=1 must return the guide bit for bit)."""
    if sigma_start * lam == 0:
        return guide.clone()
    return guide + (lam * sigma_start) * eps


def run_sampler(cfg: SamplerConfig, denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                noise: NoiseFn | None = None, callback: Callback | None = None) -> torch.Tensor:
    extra = {}
    if cfg.name == "heun" and cfg.S_churn > 0:
        extra = dict(S_churn=cfg.S_churn, S_tmin=cfg.S_tmin,
                     S_tmax=cfg.S_tmax, S_noise=cfg.S_noise,
                     churn_steps=cfg.steps)
    return SAMPLERS[cfg.name](denoiser, x, sigmas, noise=noise, callback=callback, **extra)


def warm_transform(denoiser: Denoiser, guide: torch.Tensor, sampler: SamplerConfig, edm: EDMConfig,
                   warm: WarmStartConfig, noise: NoiseFn, *, start_noise: torch.Tensor | None = None,
                   callback: Callback | None = None) -> torch.Tensor:
    """Transform a batch of guides. `noise` (per-item, see tasks.diffusion.noise) gives eps and
    any churn noise; `start_noise` overrides eps (shared noise across long-audio windows)."""
    sigmas = warm_sigmas(sampler, edm, warm).to(guide.device)
    eps = start_noise if start_noise is not None else noise(guide)
    x = warm_start_state(guide, float(sigmas[0]), warm.lam, eps)
    if len(sigmas) == 1:
        return x
    return run_sampler(sampler, denoiser, x, sigmas, noise=noise, callback=callback)
