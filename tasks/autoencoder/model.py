"""The mel autoencoder (a VAE over frames): ConvNeXt stacks (the vocoder's block) on the log-mel's
frames, one strided convolution per factor 2 of time downsampling, and a Gaussian posterior per
latent value (Kingma & Welling 2014). 1-D over time, the mel bins as channels: every layer mixes the
whole spectrum, so a note's harmonics land in one latent frame's few values (a 2-D mel-VAE as
AudioLDM's keeps a frequency axis and reaches only 2x compression at its 8 channels).

Encoding for features and transforms uses the posterior mean, so a latent is a pure function of
its log-mel (the latent warm start at tau_init = 1 returns the encoded guide bit for bit)."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from schemas.autoencoder import AutoencoderConfig
from tasks.vocoder.vocos import ConvNeXtBlock

LOGVAR_RANGE = (-30.0, 20.0)  # as stable-diffusion's DiagonalGaussianDistribution clamps it


def _stack(cfg: AutoencoderConfig, n: int) -> nn.Sequential:
    return nn.Sequential(*(ConvNeXtBlock(cfg.dim, cfg.intermediate, cfg.kernel, 1.0 / n) for _ in range(cfg.blocks)))


class _ChannelNorm(nn.Module):
    """LayerNorm over channels of a [B, C, T] tensor."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class MelAutoencoder(nn.Module):
    """encode: log-mel [B, n_mels, T] -> (mean, logvar) [B, C, ceil(T / r)]; decode: [B, C, T'] ->
    log-mel [B, n_mels, T' r] (r = time_downsample). forward: the posterior mean's reconstruction."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.cfg = cfg
        levels = int(math.log2(cfg.time_downsample))
        n = cfg.blocks * (levels + 1)
        k = cfg.kernel
        self.encoder = nn.Sequential(
            nn.Conv1d(cfg.mel.n_mels, cfg.dim, k, padding=k // 2), _ChannelNorm(cfg.dim), _stack(cfg, n),
            *[m for _ in range(levels) for m in (nn.Conv1d(cfg.dim, cfg.dim, 4, stride=2, padding=1), _stack(cfg, n))],
            _ChannelNorm(cfg.dim), nn.Conv1d(cfg.dim, 2 * cfg.latent_channels, 1))
        self.decoder = nn.Sequential(
            nn.Conv1d(cfg.latent_channels, cfg.dim, k, padding=k // 2), _ChannelNorm(cfg.dim), _stack(cfg, n),
            *[m for _ in range(levels) for m in (nn.ConvTranspose1d(cfg.dim, cfg.dim, 4, stride=2, padding=1), _stack(cfg, n))],
            _ChannelNorm(cfg.dim), nn.Conv1d(cfg.dim, cfg.mel.n_mels, 1))

    def latent_frames(self, mel_frames: int) -> int:
        return -(-mel_frames // self.cfg.time_downsample)

    def encode(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        if logmel.ndim != 3 or logmel.shape[1] != cfg.mel.n_mels:
            raise ValueError(f"expected log-mels [batch, {cfg.mel.n_mels}, frames]; got {tuple(logmel.shape)}")
        if not torch.isfinite(logmel).all():
            raise ValueError("the log-mel holds NaN or infinite values; expected finite natural-log magnitudes")
        x = (logmel - cfg.input_offset) / cfg.input_scale
        pad = self.latent_frames(x.shape[-1]) * cfg.time_downsample - x.shape[-1]
        if pad:  # the log floor (silence) completes the last latent frame
            floor = (math.log(cfg.mel.log_floor) - cfg.input_offset) / cfg.input_scale
            x = nn.functional.pad(x, (0, pad), value=floor)
        mean, logvar = self.encoder(x).float().chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z: torch.Tensor, frames: int | None = None) -> torch.Tensor:
        """Log-mel of latent `z`; `frames` trims to the length the latent was encoded from."""
        cfg = self.cfg
        if z.ndim != 3 or z.shape[1] != cfg.latent_channels:
            raise ValueError(f"expected latents [batch, {cfg.latent_channels}, frames]; got {tuple(z.shape)}")
        y = self.decoder(z).float() * cfg.input_scale + cfg.input_offset
        return y if frames is None else y[..., :frames]

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(logmel)[0], logmel.shape[-1])


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per example, averaged over latent values (Kingma &
    Welling 2014, appendix B: -1/2 sum(1 + log s^2 - m^2 - s^2))."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).mean(1)


@torch.inference_mode()
def reconstruct(model: MelAutoencoder, logmel: np.ndarray) -> np.ndarray:
    """decode(encode(x)) of one log-mel [n_mels, frames] (the posterior mean): what a latent model's
    output at its best can be."""
    x = torch.from_numpy(np.ascontiguousarray(logmel, np.float32))[None]
    return model.decode(model.encode(x)[0], x.shape[-1])[0].numpy()
