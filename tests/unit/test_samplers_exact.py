"""Samplers against distributions whose ideal denoiser and PF-ODE solution are closed-form
(tasks.diffusion.analytic). float64 throughout, so the only error is the solver's."""
import math

import pytest
import torch

from tasks.diffusion.analytic import GaussianMixture
from tasks.diffusion.samplers import SAMPLERS, karras_sigmas, model_evaluations

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
MIX = GaussianMixture(weights=(0.3, 0.7), means=((-2.0,), (3.0,)), stds=(0.5, 0.8))
BOUNDARY = 0.5  # between the two components


def start_noise(n: int, d: int = 1, seed: int = 0) -> torch.Tensor:
    return SIGMA_MAX * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def run(name: str, denoiser, x_T: torch.Tensor, steps: int) -> torch.Tensor:
    return SAMPLERS[name](denoiser, x_T, karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX))


def mix_error(name: str, steps: int, x_T: torch.Tensor, exact: torch.Tensor) -> float:
    return float((run(name, MIX, x_T, steps) - exact).abs().mean())


def test_karras_grid_matches_eq5():
    s = karras_sigmas(10, SIGMA_MIN, SIGMA_MAX, rho=7.0)
    assert len(s) == 11 and s[-1] == 0
    assert math.isclose(s[0], SIGMA_MAX) and math.isclose(s[-2], SIGMA_MIN)
    i = 4
    expect = (SIGMA_MAX ** (1 / 7) + i / 9 * (SIGMA_MIN ** (1 / 7) - SIGMA_MAX ** (1 / 7))) ** 7
    assert math.isclose(float(s[i]), expect, rel_tol=1e-12)
    assert bool((s[:-1].diff() < 0).all())


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_gaussian_moments_and_exact_map(name):
    """N(mu, s^2 I) in 8-D: the exact PF-ODE map is affine, x0 = mu + (x_T - mu) s / sqrt(s^2 + sigma_max^2)."""
    mu, s = 1.5, 0.7
    g = GaussianMixture(weights=(1.0,), means=(tuple([mu] * 8),), stds=(s,))
    # Start from the exact marginal p_sigma_max = N(mu, (s^2 + sigma_max^2) I): the caller owns
    # the start state, so the samples' only error is the solver's.
    x_T = mu + start_noise(4000, 8) * math.sqrt(s ** 2 + SIGMA_MAX ** 2) / SIGMA_MAX
    exact = mu + (x_T - mu) * s / math.sqrt(s ** 2 + SIGMA_MAX ** 2)
    errors = [float((run(name, g, x_T, n) - exact).abs().mean()) for n in (8, 16, 32, 64)]
    assert all(a > b for a, b in zip(errors, errors[1:])), f"error must fall as steps rise: {errors}"
    out = run(name, g, x_T, 64)
    assert errors[-1] < {"euler": 0.03, "heun": 2e-3, "dpmpp_2m": 2e-3}[name]
    # Moments: tolerance = 4 standard errors of the estimate + the solver's mean error.
    n = out.numel()
    assert abs(float(out.mean()) - mu) < 4 * s / math.sqrt(n) + errors[-1]
    assert abs(float(out.std()) - s) < 4 * s / math.sqrt(2 * n) + errors[-1]


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_mixture_weights_moments_and_convergence(name):
    x_T = start_noise(4000)
    exact = MIX.ode_map(x_T, SIGMA_MAX, 0.0)
    errors = [mix_error(name, n, x_T, exact) for n in (10, 20, 40, 80)]
    assert all(a > b for a, b in zip(errors, errors[1:])), f"error must fall as steps rise: {errors}"
    out = run(name, MIX, x_T, 80)
    upper = out > BOUNDARY
    # Mixture weight: binomial standard error at n=4000 is 0.007; 0.03 also covers x_T ~ N(0, 80^2)
    # standing in for p_80 (which has mean 1.5 and std sqrt(80^2 + 5.6)).
    assert abs(float(upper.double().mean()) - 0.7) < 0.03
    assert abs(float(out[upper].mean()) - 3.0) < 0.08 and abs(float(out[upper].std()) - 0.8) < 0.08
    assert abs(float(out[~upper].mean()) + 2.0) < 0.08 and abs(float(out[~upper].std()) - 0.5) < 0.08


def test_heun_beats_euler_at_equal_model_evaluations():
    """Second order pays off once the step is small enough (>= ~40 evaluations on this grid)."""
    x_T = start_noise(4000)
    exact = MIX.ode_map(x_T, SIGMA_MAX, 0.0)
    for heun_steps in (20, 40, 80):
        grid = karras_sigmas(heun_steps, SIGMA_MIN, SIGMA_MAX)
        nfe = model_evaluations("heun", grid)
        assert nfe == 2 * heun_steps - 1
        assert mix_error("heun", heun_steps, x_T, exact) < mix_error("euler", nfe, x_T, exact) / 2


def test_dpmpp_2m_at_10_evaluations_close_to_heun_at_35():
    """Stated tolerance: DPM-Solver++(2M) at 10 evaluations has per-sample error <= 0.5 (Heun at
    35 evaluations: ~0.05; the components' stds are 0.5 and 0.8), mixture weight within 0.01 of
    Heun's, and beats Euler at the same 10 evaluations."""
    x_T = start_noise(4000)
    exact = MIX.ode_map(x_T, SIGMA_MAX, 0.0)
    dpm, heun = run("dpmpp_2m", MIX, x_T, 10), run("heun", MIX, x_T, 18)
    assert model_evaluations("heun", karras_sigmas(18, SIGMA_MIN, SIGMA_MAX)) == 35
    assert float((dpm - exact).abs().mean()) < 0.5
    assert float((heun - exact).abs().mean()) < 0.06
    assert abs(float((dpm > BOUNDARY).double().mean()) - float((heun > BOUNDARY).double().mean())) < 0.01
    assert float((dpm - exact).abs().mean()) < mix_error("euler", 10, x_T, exact)


def test_churn_uses_the_given_noise_and_keeps_the_distribution():
    x_T = start_noise(4000)
    grid = karras_sigmas(40, SIGMA_MIN, SIGMA_MAX)
    def seeded(seed):
        gen = torch.Generator().manual_seed(seed)
        return lambda like: torch.randn(like.shape, generator=gen, dtype=like.dtype)

    a = SAMPLERS["heun"](MIX, x_T, grid, S_churn=10, noise=lambda like: torch.zeros_like(like))
    b = SAMPLERS["heun"](MIX, x_T, grid, S_churn=10, noise=seeded(3))
    b2 = SAMPLERS["heun"](MIX, x_T, grid, S_churn=10, noise=seeded(3))
    assert torch.equal(b, b2) and not torch.equal(a, b)
    assert abs(float((b > BOUNDARY).double().mean()) - 0.7) < 0.03


def test_callback_sees_every_step():
    seen = []
    SAMPLERS["dpmpp_2m"](MIX, start_noise(8), karras_sigmas(7, SIGMA_MIN, SIGMA_MAX), callback=seen.append)
    assert [s["i"] for s in seen] == list(range(7)) and seen[-1]["sigma_next"] == 0
