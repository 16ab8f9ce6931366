"""The adaptive tau_init search (tasks/auto_t_init.py) against a closed form: with a denoiser and a
probe whose P(target | x̂0) is a known function of sigma, the bisection finds the largest passing
candidate in ceil(log2(K + 1)) previews, and a clip that never passes gets its best preview."""
from __future__ import annotations

import math

import pytest
import torch

from schemas.diffusion import RECOMMENDED_SAMPLER, EDMConfig, WarmStartConfig, WindowConfig
from schemas.probe import AutoStart
from tasks.auto_t_init import choose_t_init
from tasks.diffusion.warm import warm_sigmas
from tasks.diffusion.windows import item_windows

EDM = EDMConfig()


def sigma_of(t: float) -> float:
    return float(warm_sigmas(RECOMMENDED_SAMPLER, EDM, WarmStartConfig(t_init=t, lam=0.0))[0])


def test_bisection_finds_the_largest_candidate_that_turns_into_the_target():
    auto = AutoStart(candidates=(0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8), threshold=0.5)
    # item i turns into the target once sigma_start reaches turn[i]
    turn = [sigma_of(0.8) * 0.5, sigma_of(0.6) * 0.99, sigma_of(0.45) * 0.99, 1e9]
    mels = [torch.full((2, 20), float(i)) for i in range(len(turn))]  # each window's guide holds its item
    wins = item_windows(mels, [f"clip{i}" for i in range(len(turn))], WindowConfig(window_frames=8, overlap_frames=2), 0)
    previews = []

    def denoiser(x, s):  # x̂0: row 0 the item (lambda 0: x is the guide), row 1 sigma
        return torch.stack([torch.stack([xi[0], torch.full_like(xi[0], float(si))]) for xi, si in zip(x, s)])

    def probe(x0):  # P = 1 from the item's turning sigma on, below it rising to 0.4
        previews.append(len(x0))
        return torch.tensor([1.0 if float(x[1, 0]) >= turn[int(x[0, 0])] else 0.4 * float(x[1, 0]) / turn[int(x[0, 0])]
                             for x in x0])

    got = choose_t_init(denoiser, wins, len(mels), auto, sigma_of, 0.0, probe, batch=4, pad_to=4)
    assert [c.t_init for c in got] == [0.8, 0.6, 0.45, 0.45]
    assert [c.passed for c in got] == [True, True, True, False]
    assert got[3].p_target < 0.5  # never passes: the previewed candidate where P was highest (the most noise here)
    rounds = math.ceil(math.log2(len(auto.candidates) + 1))
    assert all(c.previews <= rounds for c in got) and max(c.previews for c in got) == rounds
    assert max(previews) <= 4  # previews go through in batches of at most `batch` windows


def test_candidates_are_checked_and_sorted():
    assert AutoStart(candidates=(0.5, 0.8, 0.6)).candidates == (0.8, 0.6, 0.5)
    with pytest.raises(ValueError, match=r"candidates must be tau_init values in \(0, 1\)"):
        AutoStart(candidates=(0.5, 1.0))


def test_the_noise_rule_starts_a_noisier_input_at_a_larger_sigma():
    """DMID-style enhancement: with the ideal denoiser of Gaussian data (closed form), a clean input
    keeps the most faithful start and noisier inputs get larger sigma_start, in order."""
    from tasks.auto_t_init import choose_by_noise
    from tasks.diffusion.analytic import GaussianMixture

    d = 2 * 20
    data = GaussianMixture((1.0,), ((0.0,) * d,), (0.5,))
    g = torch.Generator().manual_seed(0)
    clean = 0.5 * torch.randn(2, 20, generator=g)
    mels = [clean + s * torch.randn(2, 20, generator=g) for s in (0.0, 0.3, 1.0, 3.0)]
    wins = item_windows(mels, [f"c{i}" for i in range(4)], WindowConfig(window_frames=20, overlap_frames=0), 0)

    def denoiser(x, s):
        return data.denoise(x.reshape(len(x), -1), s).reshape(x.shape)

    auto = AutoStart(candidates=(0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2), rule="noise")
    got = choose_by_noise(denoiser, wins, 4, auto, sigma_of, batch=4)
    t = [c.t_init for c in got]
    assert t[0] >= t[1] >= t[2] > t[3], t  # more degradation, an earlier (noisier) start
    assert sigma_of(t[3]) > 1.0 and sigma_of(t[2]) >= 0.3


def test_t_init_option_reads_a_number_or_auto():
    import typer

    from cli.common import t_init_option

    assert t_init_option(None) == (None, None)
    assert t_init_option("0.55") == (0.55, None)
    t, auto = t_init_option("AUTO")
    assert t is None and AutoStart.model_validate(auto) == AutoStart()
    with pytest.raises(typer.Exit):
        t_init_option("half")
