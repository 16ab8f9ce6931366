"""Mel -> audio. Every place that produces audio goes through a `Vocoder`; Griffin-Lim is the
default because it needs no weights (none can be downloaded here). A trained vocoder plugs in
by implementing the same two members."""
from __future__ import annotations

import threading
from typing import Protocol

import numpy as np
import torch
import torchaudio

from schemas.configs import MelConfig


class Vocoder(Protocol):
    sample_rate_hz: int

    def __call__(self, logmel: np.ndarray) -> np.ndarray:
        """Natural-log mel magnitude [n_mels, frames] (or [batch, n_mels, frames]) -> audio."""
        ...


class GriffinLimVocoder:
    """Invert the mel filterbank (non-negative least squares, torchaudio), then recover phase
    by Griffin-Lim. Deterministic for a seed. For listening checks and metrics, not for beauty."""

    def __init__(self, cfg: MelConfig, n_iter: int = 32, seed: int = 0):
        self.cfg, self.n_iter, self.seed = cfg, n_iter, seed
        self.sample_rate_hz = cfg.sample_rate_hz
        self.inverse_mel = torchaudio.transforms.InverseMelScale(
            n_stft=cfg.n_fft // 2 + 1, n_mels=cfg.n_mels, sample_rate=cfg.sample_rate_hz,
            f_min=cfg.f_min_hz, f_max=cfg.f_max_hz, norm="slaney", mel_scale="slaney")
        self.griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=cfg.n_fft, n_iter=n_iter, win_length=cfg.win_length_samples,
            hop_length=cfg.hop_length_samples, power=1.0)

    def __call__(self, logmel: np.ndarray) -> np.ndarray:
        if logmel.shape[-2] != self.cfg.n_mels:
            raise ValueError(f"expected {self.cfg.n_mels} mel bins, got shape {logmel.shape}")
        if not np.isfinite(logmel).all():
            raise ValueError("log-mel contains NaN or infinite values")
        mag = torch.exp(torch.from_numpy(np.asarray(logmel, dtype=np.float32)))
        # torchaudio draws Griffin-Lim's random initial phase from torch's global generator (it
        # takes no generator of its own); the lock keeps seed and draw together when clips are
        # vocoded on several threads at once (ray_actors/transform.in_process), so the output
        # stays the seed's whatever the order.
        with _GLOBAL_RNG, torch.inference_mode():
            torch.manual_seed(self.seed)
            return self.griffin_lim(self.inverse_mel(mag)).numpy()


_GLOBAL_RNG = threading.Lock()
VOCODERS = {"griffin-lim": GriffinLimVocoder}
