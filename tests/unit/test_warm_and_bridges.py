"""Warm initialization and diffusion bridges against closed forms (1-D Gaussian mixtures)."""
import math

import pytest
import torch

from schemas.diffusion import EDMConfig, SamplerConfig, WarmStartConfig
from tasks.diffusion.analytic import GaussianMixture
from tasks.diffusion.bridges import bridge_sigmas, ddib
from tasks.diffusion.noise import ItemNoise, item_seed
from tasks.diffusion.samplers import SAMPLERS, karras_sigmas
from tasks.diffusion.warm import start_index, warm_sigmas, warm_transform

EDM = EDMConfig()
MIX = GaussianMixture(weights=(0.5, 0.5), means=((-2.0,), (3.0,)), stds=(0.5, 0.5))
BOUNDARY = 0.5


def noise_for(n: int, seed: int = 0) -> ItemNoise:
    return ItemNoise([item_seed(seed, f"item-{i}") for i in range(n)])


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m"])
def test_t_init_one_returns_the_guide_bit_for_bit(name):
    guide = torch.tensor([[-0.0, 1.5, -3.25], [7.0, 0.0, float("1e-30")]])
    out = warm_transform(lambda x, s: x * 0, guide, SamplerConfig(name=name, steps=20),
                         EDM, WarmStartConfig(t_init=1.0, lam=1.0), noise_for(2))
    assert out.dtype == guide.dtype
    assert torch.equal(out.view(torch.int32), guide.view(torch.int32))  # -0.0 stays -0.0


def test_start_index_and_grids():
    s = SamplerConfig(steps=10)
    assert [start_index(t, 10) for t in (0, 0.25, 0.5, 0.55, 1)] == [0, 3, 5, 6, 10]
    full = warm_sigmas(s, EDM)
    assert torch.equal(warm_sigmas(s, EDM, WarmStartConfig(t_init=0.0)), full)
    assert torch.equal(warm_sigmas(s, EDM, WarmStartConfig(t_init=0.3)), full[3:])
    g = warm_sigmas(s, EDM, WarmStartConfig(sigma_start=2.5))
    assert math.isclose(float(g[0]), 2.5) and len(g) == 11 and g[-1] == 0
    with pytest.raises(ValueError, match="exactly one"):
        WarmStartConfig(t_init=0.5, sigma_start=1.0)


def test_t_init_zero_lam_one_is_cold_generation():
    """Same noise eps: warm at tau=0 starts from guide + sigma_max eps on the full grid. With a zero
    guide that is bit-identical to cold generation from sigma_max eps; with a guide g the exact ODE
    (affine for a Gaussian) moves the output by g s / sqrt(s^2 + sigma_max^2) and no more."""
    s_data = 0.5
    gauss = GaussianMixture(weights=(1.0,), means=((1.0,) * 4,), stds=(s_data,))
    cfg = SamplerConfig(name="heun", steps=30)
    eps = noise_for(64)(torch.zeros(64, 4, dtype=torch.float64))
    cold = SAMPLERS["heun"](gauss, EDM.sigma_max * eps, warm_sigmas(cfg, EDM))
    zero = torch.zeros(64, 4, dtype=torch.float64)
    warm0 = warm_transform(gauss, zero, cfg, EDM, WarmStartConfig(t_init=0.0, lam=1.0), noise_for(64),
                           start_noise=eps)
    assert torch.equal(warm0, cold)
    g = torch.full((64, 4), 0.8, dtype=torch.float64)
    warm = warm_transform(gauss, g, cfg, EDM, WarmStartConfig(t_init=0.0, lam=1.0), noise_for(64), start_noise=eps)
    shift = 0.8 * s_data / math.sqrt(s_data ** 2 + EDM.sigma_max ** 2)
    assert torch.allclose(warm - cold, torch.full_like(cold, shift), atol=1e-4)


def test_probability_of_staying_in_the_guides_component_falls_with_t_init():
    """Guide at component A's centre. Starting at sigma_k = grid[round(tau N)], the exact output
    stays in A iff x_k < F_k^{-1}(F_0(boundary)), so P(stay) = Phi((F_k^{-1}(F_0(b)) - g) / sigma_k)."""
    cfg = SamplerConfig(name="heun", steps=20)
    n, g = 4000, -2.0
    guide = torch.full((n, 1), g, dtype=torch.float64)
    taus = [i / 10 for i in range(11)]
    measured, exact = [], []
    for tau in taus:
        warm = WarmStartConfig(t_init=tau, lam=1.0)
        out = warm_transform(MIX, guide, cfg, EDM, warm, noise_for(n, seed=7))
        measured.append(float((out < BOUNDARY).double().mean()))
        sk = float(warm_sigmas(cfg, EDM, warm)[0])
        if sk == 0:
            exact.append(1.0)
            continue
        threshold = MIX.icdf(MIX.cdf(torch.tensor([BOUNDARY], dtype=torch.float64), 0.0), sk)
        exact.append(0.5 * (1 + math.erf(float(threshold - g) / sk / math.sqrt(2))))
    assert measured[-1] == 1.0 and abs(measured[0] - 0.5) < 0.03
    for m, e in zip(measured, exact):
        assert abs(m - e) < 0.03, (measured, exact)
    # Monotone: exactly in the closed form, and within sampling noise (same eps for all tau) measured.
    # (strictly until it saturates at 1 in float64 for small sigma_k)
    assert all(a < b or a > 1 - 1e-9 for a, b in zip(exact, exact[1:])), exact
    assert all(a <= b + 0.01 for a, b in zip(measured, measured[1:])), measured


def test_warm_start_runs_the_tail_of_the_full_churned_sampler():
    """tau_init skips steps of the N-step sampler: the steps it runs are the full run's, churn
    gamma_i = min(S_churn/N, sqrt(2)-1) included (not S_churn over the steps left)."""
    def recording(calls):
        def denoiser(x, sigma):
            calls.append(float(sigma[0]))
            return MIX.denoise(x, sigma)
        return denoiser
    cfg = SamplerConfig(name="heun", steps=12, S_churn=3)
    full_calls, tail_calls = [], []
    guide = torch.zeros(1, 1, dtype=torch.float64)
    warm_transform(recording(full_calls), guide, cfg, EDM, WarmStartConfig(t_init=0.0), noise_for(1))
    warm_transform(recording(tail_calls), guide, cfg, EDM, WarmStartConfig(t_init=0.5), noise_for(1))
    # Heun evaluates at sigma_hat then sigma_next; 6 of 12 steps skipped = 12 evaluations skipped.
    assert len(tail_calls) == len(full_calls) - 12
    assert tail_calls == pytest.approx(full_calls[12:], rel=1e-12)
    gamma = 3 / 12
    assert tail_calls[0] == pytest.approx(float(warm_sigmas(cfg, EDM)[6]) * (1 + gamma), rel=1e-12)


def test_lambda_zero_ode_shrinks_as_the_closed_form_says_and_churn_restores_the_spread():
    """Data N(0, s^2 I): the PF-ODE is linear, x(sigma) = x0 sqrt(s^2 + sigma^2)/s, so a lambda-0
    start (the bare guide at sigma_start) comes out scaled by s/sqrt(s^2 + sigma_start^2): every
    output shrinks towards the mean once sigma_start exceeds s, even with the exact denoiser.
    Churn at sigma >= S_tmin supplies the missing noise and the spread returns (the demo's sampler);
    below S_tmin the sampler is the ODE, bit for bit."""
    s = 0.5
    gauss = GaussianMixture(weights=(1.0,), means=((0.0,) * 8,), stds=(s,))
    guide, _ = gauss.sample(2000, torch.Generator().manual_seed(0))
    ode, churned = SamplerConfig(steps=35), SamplerConfig(steps=35, S_churn=7.0, S_tmin=0.5)
    for t_init in (0.65, 0.5, 0.4):
        warm = WarmStartConfig(t_init=t_init, lam=0.0)
        sigma_start = float(warm_sigmas(ode, EDM, warm)[0])
        out = warm_transform(gauss.denoise, guide, ode, EDM, warm, noise_for(2000))
        assert torch.allclose(out, guide * s / math.sqrt(s ** 2 + sigma_start ** 2), rtol=0.03, atol=1e-4)
        out_churned = warm_transform(gauss.denoise, guide, churned, EDM, warm, noise_for(2000))
        if sigma_start < 0.5:
            assert torch.equal(out_churned, out)
        else:
            assert float(out.std()) < 0.3 * s and abs(float(out_churned.std()) / s - 1) < 0.12


def test_outputs_do_not_depend_on_the_batch():
    cfg, warm = SamplerConfig(name="heun", steps=12, S_churn=5), WarmStartConfig(t_init=0.4)
    guides = torch.linspace(-3, 3, 6, dtype=torch.float64)[:, None]
    seeds = [item_seed(1, f"clip-{i}") for i in range(6)]
    together = warm_transform(MIX, guides, cfg, EDM, warm, ItemNoise(seeds))
    for i in (0, 3, 5):
        alone = warm_transform(MIX, guides[i:i + 1], cfg, EDM, warm, ItemNoise(seeds[i:i + 1]))
        assert torch.equal(alone[0], together[i])


def test_bridge_round_trip_with_one_model_converges():
    guide, _ = MIX.sample(2000, torch.Generator().manual_seed(0))
    errors = [float((ddib(MIX, MIX, guide, 10.0, n, EDM) - guide).abs().mean()) for n in (5, 10, 20, 40)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 5e-3


def test_bridge_between_mixtures_lands_where_the_closed_form_says():
    """1-D PF-ODE flows keep quantiles: encode x under the source up to sigma_N, decode under the
    target, T(x) = F_t^{-1}(F_{t,sigma_N}(F_{s,sigma_N}^{-1}(F_{s,sigma_min}(x))))."""
    target = GaussianMixture(weights=(0.2, 0.3, 0.5), means=((-5.0,), (0.0,), (4.0,)), stds=(0.4, 0.6, 0.5))
    sigma_n = 20.0
    guide, _ = MIX.sample(2000, torch.Generator().manual_seed(1))
    out = ddib(MIX, target, guide, sigma_n, 40, EDM)
    latent = MIX.ode_map(guide, EDM.sigma_min, sigma_n)
    predicted = target.ode_map(latent, sigma_n, 0.0)
    assert float((out - predicted).abs().mean()) < 0.02
    comp = lambda x: target.responsibilities(x, 0.0).argmax(1)  # noqa: E731
    assert float((comp(out) == comp(predicted)).double().mean()) > 0.99
    up, down = bridge_sigmas(sigma_n, 40, EDM)
    assert torch.equal(up.flip(0), down[:-1])


def test_conditional_baseline_samples_the_conditional_distribution():
    """Paired data y | c ~ N(2c - 1, 0.3^2): its ideal conditional denoiser is closed-form, so
    sampling from noise given c must produce that conditional's moments per item."""
    from tasks.diffusion.conditional import generate_conditional

    c = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64).repeat_interleave(2000)[:, None]

    def denoiser(x, sigma):
        return GaussianMixture((1.0,), ((0.0,),), (0.3,)).denoise(x - (2 * c - 1), sigma) + (2 * c - 1)

    out = generate_conditional(denoiser, c, SamplerConfig(name="dpmpp_2m", steps=30), EDM,
                               ItemNoise([item_seed(0, str(i)) for i in range(len(c))]))
    for k, ck in enumerate((-1.0, 0.0, 2.0)):
        part = out[k * 2000:(k + 1) * 2000]
        assert abs(float(part.mean()) - (2 * ck - 1)) < 0.03 and abs(float(part.std()) - 0.3) < 0.02


def test_solver_steps_keep_sigma_start_on_the_n_grid_and_run_k_karras_steps_from_there():
    """K (solver_steps) changes the solver's grid, never where tau_init starts (docs/design.md)."""
    n_grid = SamplerConfig(name="dpmpp_2m", steps=35)
    k6 = n_grid.model_copy(update={"solver_steps": 6})
    for t in (0.5, 0.6, 0.65, 0.8):
        full = warm_sigmas(n_grid, EDM, WarmStartConfig(t_init=t))
        g = warm_sigmas(k6, EDM, WarmStartConfig(t_init=t))
        assert float(g[0]) == float(full[0])  # the same sigma_start
        assert torch.equal(g, karras_sigmas(6, EDM.sigma_min, float(full[0]))) and len(g) == 7
    # a cold start (tau 0) follows the N grid; tau 1 runs nothing; an explicit sigma_start takes K steps
    assert torch.equal(warm_sigmas(k6, EDM, WarmStartConfig(t_init=0.0)), warm_sigmas(n_grid, EDM))
    assert torch.equal(warm_sigmas(k6, EDM, WarmStartConfig(t_init=1.0)), torch.zeros(1, dtype=torch.float64))
    assert len(warm_sigmas(k6, EDM, WarmStartConfig(sigma_start=2.0))) == 7
    # never more steps than the N grid's own tail (tau 0.9 of 35: 4 left)
    assert torch.equal(warm_sigmas(k6, EDM, WarmStartConfig(t_init=0.9)), warm_sigmas(n_grid, EDM, WarmStartConfig(t_init=0.9)))


def test_six_dpmpp_steps_from_sigma_start_follow_the_exact_ode():
    """1-D mixture: the probability-flow ODE from sigma_start to 0 is a quantile map (closed form).
    DPM-Solver++(2M) in 6 steps from the tau 0.6 start lands on it; 1 Euler step does not, so
    the tolerance separates a solver that integrates from one that does not."""
    cfg = SamplerConfig(name="dpmpp_2m", steps=35, solver_steps=6)
    warm = WarmStartConfig(t_init=0.6, lam=1.0)
    s0 = float(warm_sigmas(cfg, EDM, warm)[0])
    x0, _ = MIX.sample(512, torch.Generator().manual_seed(0))
    x = x0 + s0 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=x0.dtype)
    exact = MIX.ode_map(x, s0, 1e-6)
    got = SAMPLERS["dpmpp_2m"](MIX.denoise, x, warm_sigmas(cfg, EDM, warm))
    crude = SAMPLERS["euler"](MIX.denoise, x, karras_sigmas(1, EDM.sigma_min, s0))
    err, crude_err = (got - exact).abs().median().item(), (crude - exact).abs().median().item()
    assert err < 0.03 < crude_err, (err, crude_err)  # measured 0.011 and 0.159
