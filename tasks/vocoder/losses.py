"""Spectral reconstruction losses of a vocoder, no discriminator: multi-resolution STFT loss
(spectral convergence + log-magnitude L1; Yamamoto et al. 2020, Parallel WaveGAN eq. 4-6) and
the L1 distance of log-mels (Vocos, HiFi-GAN's mel term), per example."""
from __future__ import annotations

import torch

RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop), window = n_fft


def _mag(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    spec = torch.stft(x.float(), n_fft, hop, n_fft, torch.hann_window(n_fft, device=x.device), center=True,
                      return_complex=True)
    # sqrt(re² + im² + eps), not abs(): |z|'s gradient is 0/0 at an exactly zero bin (a NaN that
    # stopped the first cpu-preset run at step ~1,400)
    return (torch.view_as_real(spec).square().sum(-1) + 1e-14).sqrt().clamp(min=1e-7)


def multi_resolution_stft(y_hat: torch.Tensor, y: torch.Tensor,
                          resolutions: tuple[tuple[int, int], ...] = RESOLUTIONS) -> torch.Tensor:
    """Per example: mean over resolutions of ||S - S_hat||_F / ||S||_F + mean |log S - log S_hat|."""
    total = y.new_zeros(y.shape[0])
    for n_fft, hop in resolutions:
        s, s_hat = _mag(y, n_fft, hop), _mag(y_hat, n_fft, hop)
        sc = torch.linalg.vector_norm(s - s_hat, dim=(1, 2)) / torch.linalg.vector_norm(s, dim=(1, 2)).clamp(min=1e-7)
        total = total + sc + (s.log() - s_hat.log()).abs().mean(dim=(1, 2))
    return total / len(resolutions)


def mel_l1(logmel_hat: torch.Tensor, logmel: torch.Tensor) -> torch.Tensor:
    return (logmel_hat - logmel).abs().mean(dim=(1, 2))
