"""Dual diffusion implicit bridges (DDIB; Su et al. 2023, as used for timbre transfer by
Mancusi et al. 2024): encode the guide with the *source* model's probability-flow ODE from
sigma_min up to sigma_N, then decode with the *target* model from sigma_N down to 0. Both legs
are deterministic, so the latent at sigma_N is the guide's code under the source model."""
from __future__ import annotations

import torch

from schemas.diffusion import EDMConfig
from tasks.diffusion.precond import Denoiser
from tasks.diffusion.samplers import SAMPLERS, Callback, karras_sigmas


def bridge_sigmas(sigma_n: float, num_steps: int, edm: EDMConfig, rho: float = 7.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(encode grid sigma_min -> sigma_N, decode grid sigma_N -> 0), the same Karras points."""
    if not edm.sigma_min < sigma_n:
        raise ValueError(f"sigma_N={sigma_n} must exceed sigma_min={edm.sigma_min}")
    down = karras_sigmas(num_steps, edm.sigma_min, sigma_n, rho)
    return down[:-1].flip(0), down


def ddib_encode(source: Denoiser, guide: torch.Tensor, sigmas_up: torch.Tensor, *, sampler: str = "heun",
                callback: Callback | None = None) -> torch.Tensor:
    """Integrate the source PF-ODE upwards; the guide stands for the state at sigmas_up[0]."""
    if sampler not in ("euler", "heun"):
        raise ValueError(f"encoding integrates upwards; use 'euler' or 'heun', not {sampler!r}")
    return SAMPLERS[sampler](source, guide, sigmas_up, callback=callback)


def ddib(source: Denoiser, target: Denoiser, guide: torch.Tensor, sigma_n: float, num_steps: int,
         edm: EDMConfig, *, rho: float = 7.0, sampler: str = "heun") -> torch.Tensor:
    up, down = bridge_sigmas(sigma_n, num_steps, edm, rho)
    latent = ddib_encode(source, guide, up.to(guide.device), sampler=sampler)
    return SAMPLERS[sampler](target, latent, down.to(guide.device))
