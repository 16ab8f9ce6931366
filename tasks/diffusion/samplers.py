"""Reverse-process samplers in the EDM (VE, sigma(t) = t) formulation.

Every sampler has k-diffusion's contract `(denoiser, x, sigmas, *, noise=None, callback=None)`:
the caller owns the start state x (at sigmas[0]) and the grid, so a warm start is just a
different x and a suffix of the grid. `sigmas` is 1-D, usually ending in 0."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from tasks.diffusion.precond import Denoiser

NoiseFn = Callable[[torch.Tensor], torch.Tensor]
Callback = Callable[[dict], None]


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """EDM eq. 5: sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
    i < N, and sigma_N = 0. Returns N+1 values in float64."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    i = torch.arange(num_steps, dtype=torch.float64)
    ramp = i / max(num_steps - 1, 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    s = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)])


def _sig(sigma: float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)


def _d(denoiser: Denoiser, x: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """EDM eq. 3 (probability-flow ODE, sigma(t)=t): dx/dsigma = (x - D(x; sigma)) / sigma."""
    denoised = denoiser(x, _sig(sigma, x))
    return (x - denoised) / sigma, denoised


def _report(callback: Callback | None, **info) -> None:
    if callback is not None:
        callback(info)


@torch.no_grad()
def euler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseFn | None = None,
          callback: Callback | None = None) -> torch.Tensor:
    """First-order Euler steps on the PF-ODE (EDM Algorithm 1 without the 2nd-order correction)."""
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        d, denoised = _d(denoiser, x, s[i])
        x = x + (s[i + 1] - s[i]) * d
        _report(callback, i=i, sigma=s[i], sigma_next=s[i + 1], x=x, denoised=denoised)
    return x


@torch.no_grad()
def heun(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseFn | None = None,
         callback: Callback | None = None, S_churn: float = 0.0, S_tmin: float = 0.0,
         S_tmax: float = float("inf"), S_noise: float = 1.0,
         churn_steps: int | None = None) -> torch.Tensor:
    """EDM Algorithm 2 (Algorithm 1 when S_churn=0): Heun's 2nd-order method with optional
    stochastic churn gamma_i = min(S_churn/N, sqrt(2)-1) for sigma in [S_tmin, S_tmax].
    N is `churn_steps`, the full schedule's step count (default: this grid's): a warm start
    runs the tail of the full sampler, so its gamma_i must not grow as steps are skipped.
    Works on an ascending grid too (DDIB encoding); the final step to sigma=0 is Euler."""
    s = sigmas.tolist()
    n = len(s) - 1
    gamma_churn = min(S_churn / (churn_steps or n), math.sqrt(2) - 1)
    for i in range(n):
        sigma, sigma_next = s[i], s[i + 1]
        gamma = gamma_churn if S_churn > 0 and S_tmin <= sigma <= S_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            eps = noise(x) if noise is not None else torch.randn_like(x)
            x = x + math.sqrt(sigma_hat ** 2 - sigma ** 2) * S_noise * eps
        d, denoised = _d(denoiser, x, sigma_hat)
        x_next = x + (sigma_next - sigma_hat) * d
        if sigma_next != 0:
            d_next, _ = _d(denoiser, x_next, sigma_next)
            x_next = x + (sigma_next - sigma_hat) * (d + d_next) / 2
        x = x_next
        _report(callback, i=i, sigma=sigma_hat, sigma_next=sigma_next, x=x, denoised=denoised)
    return x


@torch.no_grad()
def dpmpp_2m(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseFn | None = None,
             callback: Callback | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), data-prediction multistep exponential
    integrator. With alpha=1, lambda = -ln(sigma) and h = lambda_{i+1} - lambda_i:
        x_{i+1} = (sigma_{i+1}/sigma_i) x_i - (e^{-h} - 1) D_i',
        D_i' = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1},  r = h_{i-1}/h_i   (first step: D_i' = D_i)."""
    s = sigmas.tolist()
    old_denoised, h_last = None, None
    for i in range(len(s) - 1):
        sigma, sigma_next = s[i], s[i + 1]
        denoised = denoiser(x, _sig(sigma, x))
        if sigma_next == 0:
            x = denoised  # the limit of the update as sigma_{i+1} -> 0
        else:
            h = math.log(sigma) - math.log(sigma_next)
            d = denoised
            if old_denoised is not None:
                r = h_last / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_next / sigma) * x - math.expm1(-h) * d
            h_last = h
        old_denoised = denoised
        _report(callback, i=i, sigma=sigma, sigma_next=sigma_next, x=x, denoised=denoised)
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"euler": euler, "heun": heun, "dpmpp_2m": dpmpp_2m}


def model_evaluations(name: str, sigmas: torch.Tensor) -> int:
    """Denoiser calls a deterministic run makes on this grid (Heun's last step to 0 is Euler)."""
    n = len(sigmas) - 1
    if name == "heun":
        return 2 * n - int(n > 0 and float(sigmas[-1]) == 0)
    return n
