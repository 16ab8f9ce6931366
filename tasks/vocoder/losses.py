"""Reconstruction losses of a vocoder, no discriminator, per example: multi-resolution STFT loss
(spectral convergence + log-magnitude L1; Yamamoto et al. 2020, Parallel WaveGAN eq. 4-6), the L1
distance of log-mels (Vocos, HiFi-GAN's mel term), and losses on the head's own STFT (Ai & Ling
2023, APNet eq. 8-13: anti-wrapping instantaneous phase, group delay, instantaneous angular
frequency) with APNet's amplitude and STFT-consistency terms (spectrum_losses says why)."""
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


def anti_wrap(x: torch.Tensor) -> torch.Tensor:
    """APNet eq. 9: f_AW(x) = |x - 2π round(x / 2π)|, the distance of two angles on the circle."""
    return (x - 2 * torch.pi * torch.round(x / (2 * torch.pi))).abs()


def spectrum_losses(mag_hat: torch.Tensor, phase_hat: torch.Tensor, spec: torch.Tensor,
                    consistent: torch.Tensor) -> torch.Tensor:
    """Per example, the head's STFT against the real audio's (`spec`, complex [B, F, T], same
    framing), APNet's terms: log-amplitude L1 (eq. 8, L1 here), instantaneous phase, group delay
    and instantaneous angular frequency (eq. 10-12, plain means over bins), and STFT consistency
    (eq. 13): `consistent` is the STFT of the head's own inverse STFT, and |consistent - Ŝ|² is
    normalised by the real spectrum's energy. Why: trained on the output alone, the head put large
    magnitudes in the quiet low bins and cancelled them by phases that disagree across
    overlapping frames. These terms ask the head's spectrum itself to be the real, consistent
    one. Measured: on their own they did not stop the frame-rate buzz (violin JD back to 0.37 by
    step 2,000 of a fine-tune); with the passband (Vocos.passband) it stayed at 0.03-0.07."""
    phase = torch.angle(spec)
    mag = spec.abs().clamp(min=1e-5)
    s_hat = torch.polar(mag_hat, phase_hat)
    energy = spec.abs().square().mean(dim=(1, 2)).clamp(min=1e-10)
    return ((mag_hat.clamp(min=1e-5).log() - mag.log()).abs().mean(dim=(1, 2))
            + anti_wrap(phase_hat - phase).mean(dim=(1, 2))
            + anti_wrap(torch.diff(phase_hat, dim=1) - torch.diff(phase, dim=1)).mean(dim=(1, 2))   # group delay
            + anti_wrap(torch.diff(phase_hat, dim=2) - torch.diff(phase, dim=2)).mean(dim=(1, 2))   # inst. frequency
            + (consistent - s_hat).abs().square().mean(dim=(1, 2)) / energy)
