"""The vocoder's adversaries, as Vocos trains with them (Siuzdak 2023, §3.3): HiFi-GAN's
multi-period discriminator (Kong et al. 2020, §2.2: the waveform folded at periods 2, 3, 5, 7, 11,
so each sub-discriminator sees one phase of every p-th sample) and UnivNet's multi-resolution
spectrogram discriminator (Jang et al. 2021, §2.2), with the hinge losses and the feature-matching
loss (HiFi-GAN eq. 3). Why at all: spectral losses alone average over what they cannot predict,
and the result is smooth and slightly buzzy; a discriminator penalises exactly that texture
(measured here: copy-synthesis FAD against real flute +2.3 above the real clips after spectral
losses alone).

Channels are narrower than HiFi-GAN's (32..1024) so a step fits a 2-core CPU; `DiscriminatorConfig`
holds them. Weight norm everywhere, no spectral norm: it carries buffers DDP would broadcast."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from schemas.vocoder import DiscriminatorConfig

LRELU = 0.1  # HiFi-GAN's leaky-ReLU slope


def leaky_conv_stack(convs: nn.ModuleList, post: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Leaky-ReLU conv layers, then the 1-channel logits layer: (logits [B, -1], every layer's output)."""
    features = []
    for conv in convs:
        x = nn.functional.leaky_relu(conv(x), LRELU)
        features.append(x)
    x = post(x)
    return x.flatten(1), features + [x]


class PeriodDiscriminator(nn.Module):
    """[B, samples] -> (logits, feature maps): the signal as [B, 1, samples / p, p], 2-D convs
    of kernel (5, 1) stride (3, 1), so periods are never mixed (HiFi-GAN §2.2)."""

    def __init__(self, period: int, channels: tuple[int, ...]):
        super().__init__()
        self.period = period
        dims = (1,) + channels
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(a, b, (5, 1), (3 if k < len(channels) - 1 else 1, 1), padding=(2, 0)))
            for k, (a, b) in enumerate(zip(dims[:-1], dims[1:])))
        self.post = weight_norm(nn.Conv2d(dims[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        pad = (-y.shape[-1]) % self.period
        x = nn.functional.pad(y[:, None], (0, pad), mode="reflect" if pad < y.shape[-1] else "constant")
        x = x.view(y.shape[0], 1, -1, self.period)
        return leaky_conv_stack(self.convs, self.post, x)


class ResolutionDiscriminator(nn.Module):
    """[B, samples] -> (logits, feature maps) from the log-magnitude STFT at one resolution;
    2-D convs of kernel (3, 9), striding over frequency (UnivNet §2.2)."""

    def __init__(self, n_fft: int, hop: int, channels: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.convs = nn.ModuleList([weight_norm(nn.Conv2d(1, channels, (3, 9), padding=(1, 4)))] + [
            weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4))) for _ in range(3)] + [
            weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1)))])
        self.post = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spec = torch.stft(y.float(), self.n_fft, self.hop, self.n_fft, self.window, center=True, return_complex=True)
        # log(|S| + eps) through view_as_real: |z| has no gradient at an exactly zero bin
        x = (torch.view_as_real(spec).square().sum(-1) + 1e-10).sqrt().add(1e-5).log()
        x = x.transpose(1, 2)[:, None].to(y.dtype)  # [B, 1, frames, bins]
        return leaky_conv_stack(self.convs, self.post, x)


class Discriminators(nn.Module):
    """Every sub-discriminator of both families; forward -> per sub-discriminator (logits, features)."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.cfg = cfg
        self.subs = nn.ModuleList([PeriodDiscriminator(p, cfg.period_channels) for p in cfg.periods] +
                                  [ResolutionDiscriminator(n, h, cfg.resolution_channels) for n, h in cfg.resolutions])

    def forward(self, y: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [d(y) for d in self.subs]


def _per_example(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


def discriminator_hinge(real: list, fake: list) -> torch.Tensor:
    """Per example: mean over sub-discriminators of E[max(0, 1 - D(y))] + E[max(0, 1 + D(ŷ))]."""
    terms = [_per_example(torch.relu(1 - r)) + _per_example(torch.relu(1 + f)) for (r, _), (f, _) in zip(real, fake)]
    return torch.stack(terms).mean(0)


def generator_hinge(fake: list) -> torch.Tensor:
    """Per example: mean over sub-discriminators of E[max(0, 1 - D(ŷ))]."""
    return torch.stack([_per_example(torch.relu(1 - f)) for f, _ in fake]).mean(0)


class DiscriminatorLoss(nn.Module):
    """forward(real, fake) -> per-example hinge loss of the discriminators (its own DDP wrapper:
    a kind's generator loss and this one are separate modules with separate optimizers)."""

    def __init__(self, discriminator: nn.Module):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        d = self.discriminator.requires_grad_(True)
        return discriminator_hinge(d(real), d(fake))


def feature_matching(real: list, fake: list) -> torch.Tensor:
    """Per example (HiFi-GAN eq. 3): mean over sub-discriminators of the summed per-layer L1
    distances of their feature maps, the real ones held fixed."""
    terms = [sum(_per_example((fr.detach() - ff).abs()) for fr, ff in zip(fr_all, ff_all))
             for (_, fr_all), (_, ff_all) in zip(real, fake)]
    return torch.stack(terms).mean(0)
