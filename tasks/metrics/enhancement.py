"""Enhancement metrics against a clean reference: scale-invariant SDR (Le Roux et al. 2019) and
log-spectral distance."""
from __future__ import annotations

import numpy as np


def _pair(estimate: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e, r = (np.asarray(x, dtype=np.float64).ravel() for x in (estimate, reference))
    n = min(len(e), len(r))
    if n == 0:
        raise ValueError("empty signal")
    e, r = e[:n], r[:n]
    if not (np.isfinite(e).all() and np.isfinite(r).all()):
        raise ValueError("signal contains NaN or infinite values")
    if not r.any():
        raise ValueError("the reference is silent: SI-SDR and LSD are undefined against silence")
    return e, r


def si_sdr_db(estimate: np.ndarray, reference: np.ndarray, eps: float = 1e-12) -> float:
    """10 log10(||a r||^2 / ||a r - e||^2), a = <e, r>/||r||^2, after removing the means."""
    e, r = _pair(estimate, reference)
    e, r = e - e.mean(), r - r.mean()
    target = (e @ r) / (r @ r) * r
    return float(10 * np.log10((target @ target + eps) / ((e - target) @ (e - target) + eps)))


def log_spectral_distance_db(estimate: np.ndarray, reference: np.ndarray, n_fft: int = 1024,
                             hop: int = 256, floor: float = 1e-10) -> float:
    """Mean over frames of the RMS over frequency of 10 log10 power differences (dB)."""
    e, r = _pair(estimate, reference)
    if len(r) < n_fft:
        raise ValueError(f"signal of {len(r)} samples is shorter than one {n_fft}-sample frame")
    win = np.hanning(n_fft)
    frames = np.lib.stride_tricks.sliding_window_view(np.stack([e, r]), n_fft, axis=1)[:, ::hop] * win
    p = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    d = 10 * np.log10(np.maximum(p[0], floor)) - 10 * np.log10(np.maximum(p[1], floor))
    return float(np.sqrt((d ** 2).mean(axis=-1)).mean())


def mel_l1_db(estimate: np.ndarray, reference: np.ndarray, sample_rate_hz: int, n_mels: int = 80,
              n_fft: int = 1024, hop: int = 256, floor: float = 1e-10) -> float:
    """Mean absolute difference of the two log-mel spectrograms (dB power)."""
    import librosa

    e, r = _pair(estimate, reference)
    mels = [librosa.feature.melspectrogram(y=s.astype(np.float32), sr=sample_rate_hz, n_fft=n_fft,
                                           hop_length=hop, n_mels=n_mels) for s in (e, r)]
    return float(np.mean(np.abs(10 * np.log10(np.maximum(mels[0], floor)) - 10 * np.log10(np.maximum(mels[1], floor)))))
