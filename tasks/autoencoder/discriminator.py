"""The adversary of the autoencoder's decoder fine-tune: a PatchGAN (Isola et al. 2017, §3.2.2)
over the scaled log-mel as a one-channel image [B, 1, mels, frames]. Each logit judges one patch
of the spectrogram, so what it learns is texture (the fine modulation over frames and the
harmonics' fine structure) that an L1 decoder averages away, not the global content the L1 term
already fixes. Latent diffusion's image VAE and AudioLDM's mel-VAE train against the same kind.

Its output has the shape of the vocoder's discriminators (a list of (logits, feature maps)), so
the hinge and feature-matching losses of tasks/vocoder/discriminators.py serve both."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from schemas.autoencoder import MelDiscriminatorConfig
from tasks.vocoder.discriminators import leaky_conv_stack


class MelPatchDiscriminator(nn.Module):
    """[B, mels, frames] (scaled log-mel) -> [(logits [B, patches], feature maps)]."""

    def __init__(self, cfg: MelDiscriminatorConfig):
        super().__init__()
        self.cfg = cfg
        k, dims = cfg.kernel, (1,) + cfg.channels
        last = len(cfg.channels) - 1
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(a, b, k, 2 if i < last else 1, padding=k // 2))
            for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])))
        self.post = weight_norm(nn.Conv2d(dims[-1], 1, 3, padding=1))

    def forward(self, mel: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [leaky_conv_stack(self.convs, self.post, mel[:, None])]
