"""Metric math against closed forms: Fréchet distance, FAD_inf, pitch Jaccard, SI-SDR, LSD."""
import math

import numpy as np
import pytest
import scipy.linalg

from tasks.metrics.enhancement import log_spectral_distance_db, si_sdr_db
from tasks.metrics.frechet import GaussianStats, bootstrap_ci, fad_inf, frechet_distance, gaussian_stats
from tasks.metrics.pitch_sets import active_sets, jaccard_distance


def stats(mu, sigma):
    return GaussianStats(np.asarray(mu, float), np.asarray(sigma, float), 100)


def test_frechet_closed_forms():
    # Diagonal covariances: sum (mu diff)^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = stats([0, 1], np.diag([4.0, 1.0])), stats([3, 1], np.diag([1.0, 9.0]))
    assert frechet_distance(a, b) == pytest.approx(9 + (2 - 1) ** 2 + (1 - 3) ** 2, rel=1e-12)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-12)
    # Non-commuting covariances: agrees with the textbook formula via scipy's sqrtm.
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    sa, sb = x @ x.T + np.eye(5), y @ y.T + 0.5 * np.eye(5)
    ref = np.trace(sa + sb - 2 * scipy.linalg.sqrtm(sa @ sb).real) + 4.0
    assert frechet_distance(stats(np.zeros(5), sa), stats([2, 0, 0, 0, 0], sb)) == pytest.approx(ref, rel=1e-8)
    with pytest.raises(ValueError, match="NaN"):
        gaussian_stats(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="n >= 2"):
        gaussian_stats(np.zeros((1, 3)))


def test_fad_inf_removes_small_sample_bias_and_ci_covers():
    """Two 8-D Gaussians 1 apart in the mean: true FD = 1. Plain FD on 60 samples is biased up."""
    rng = np.random.default_rng(1)
    ref = stats(np.zeros(8), np.eye(8))
    x = rng.standard_normal((60, 8)) + np.r_[1.0, np.zeros(7)]
    plain = frechet_distance(gaussian_stats(x), ref)
    extrapolated = fad_inf(x, ref, min_n=20, seed=0)
    assert abs(extrapolated - 1.0) < abs(plain - 1.0)
    lo, hi = bootstrap_ci(x, ref, n_boot=100)
    assert lo < plain < hi


def test_jaccard_distance_cases():
    a = np.zeros((4, 12), bool)
    a[:, 0] = a[:, 4] = True
    assert jaccard_distance(a, a).distance == 0.0
    b = np.roll(a, 1, axis=1)  # every pitch a semitone up: disjoint sets
    assert jaccard_distance(a, b).distance == 1.0
    c = a.copy()
    c[:, 7] = True  # {0,4} vs {0,4,7}: 1 - 2/3 per frame
    assert jaccard_distance(a, c).distance == pytest.approx(1 / 3)
    silent = np.zeros((6, 12), bool)
    r = jaccard_distance(a, np.vstack([silent[:2], a[:2]]))  # frames where both are silent are skipped
    assert r.compared_frames == 4 and r.active_frames == 4
    with pytest.raises(ValueError, match="no frame has an active pitch"):
        jaccard_distance(silent, silent)


def test_active_sets_threshold_and_melody_variant():
    act = np.array([[0.9, 0.5, 0.1], [0.2, 0.1, 0.0], [0.4, 0.8, 0.35]])
    assert active_sets(act, 0.3).tolist() == [[True, True, False], [False, False, False], [True, True, True]]
    assert active_sets(act, 0.3, monophonic=True).tolist() == [[True, False, False], [False, False, False],
                                                                 [False, True, False]]
    with pytest.raises(ValueError, match="NaN"):
        active_sets(np.array([[np.nan]]))


def test_si_sdr_and_lsd_known_values():
    rng = np.random.default_rng(2)
    ref = rng.standard_normal(16000)
    noise = rng.standard_normal(16000)
    noise -= noise.mean() + (noise @ ref) / (ref @ ref) * ref  # orthogonal to ref, zero mean
    noise *= np.linalg.norm(ref) / np.linalg.norm(noise) / math.sqrt(10)  # 10 dB below
    assert si_sdr_db(0.5 * (ref + noise), ref) == pytest.approx(10.0, abs=0.05)
    assert si_sdr_db(3 * ref, ref) > 100  # scale-invariant
    assert log_spectral_distance_db(ref, ref) == pytest.approx(0.0, abs=1e-9)
    assert log_spectral_distance_db(2 * ref, ref) == pytest.approx(20 * math.log10(2), rel=1e-6)
    with pytest.raises(ValueError, match="silent"):
        si_sdr_db(ref, np.zeros(16000))
    with pytest.raises(ValueError, match="NaN"):
        log_spectral_distance_db(np.full(2048, np.nan), ref[:2048])
