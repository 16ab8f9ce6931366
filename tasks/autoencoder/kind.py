"""The mel autoencoder as a model kind of the training solver (tasks/solver.py): random crops of
the clean clips' log-mels (the project's front end), the L1 of the scaled reconstruction plus
kl_weight x KL, with the posterior sampled by the reparameterisation trick (its noise drawn from the
step's generator, so a resumed run repeats it). Validation and the champion rule: the posterior
mean's reconstruction L1 in natural-log units on fixed crops of held-out clips."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from schemas.autoencoder import AutoencoderConfig, AutoencoderTrainConfig
from tasks.autoencoder.model import MelAutoencoder, kl_divergence
from tasks.clean_audio import clean_clips
from tasks.features import LogMel, logmel_batch
from tasks.plots import spectrograms_png


@dataclass
class AutoencoderData:
    train: list[np.ndarray]   # log-mels [n_mels, frames] of the train clips, by clip ID
    val: torch.Tensor         # [n, n_mels, segment_frames]: the first crop of each held-out clip
    val_split: str


def _crop(logmel: np.ndarray, start: int, frames: int, floor: float) -> np.ndarray:
    seg = logmel[:, start:start + frames]
    return np.pad(seg, ((0, 0), (0, frames - seg.shape[1])), constant_values=floor)


def autoencoder_data(cfg: AutoencoderTrainConfig) -> AutoencoderData:
    clips = clean_clips(cfg.clips_urls, cfg.domains, cfg.mel.sample_rate_hz, cfg.validation_clips,
                        "the autoencoder's front end")
    front = LogMel(cfg.mel)
    floor = math.log(cfg.mel.log_floor)
    held = logmel_batch(clips.held, front)
    val = np.stack([_crop(m, 0, cfg.segment_frames, floor) for m in held])
    return AutoencoderData(logmel_batch(clips.train, front), torch.from_numpy(val), clips.held_split)


class AutoencoderLoss(torch.nn.Module):
    """forward(logmel, noise) -> per-example L1 (scaled log-mel units) + kl_weight * KL."""

    def __init__(self, model: MelAutoencoder, kl_weight: float):
        super().__init__()
        self.model, self.kl_weight = model, kl_weight

    def forward(self, logmel: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        m = self.model
        mean, logvar = m.encode(logmel)
        z = mean + (0.5 * logvar).exp() * noise  # reparameterisation (Kingma & Welling 2014, eq. 10)
        recon = m.decode(z, logmel.shape[-1])
        l1 = ((recon - logmel).abs() / m.cfg.input_scale).flatten(1).mean(1)
        return l1 + self.kl_weight * kl_divergence(mean, logvar)


class AutoencoderKind:
    def __init__(self, cfg: AutoencoderTrainConfig, data: AutoencoderData):
        self.cfg, self.data = cfg, data
        self.floor = math.log(cfg.mel.log_floor)

    def architecture(self) -> AutoencoderConfig:
        return self.cfg.autoencoder()

    def loss_module(self, model: torch.nn.Module) -> torch.nn.Module:
        return AutoencoderLoss(model, self.cfg.kl_weight)

    def batch(self, generator: torch.Generator, size: int) -> dict[str, torch.Tensor]:
        clips, frames = self.data.train, self.cfg.segment_frames
        idx = torch.randint(len(clips), (size,), generator=generator).tolist()
        segs = []
        for i in idx:
            start = int(torch.randint(max(1, clips[i].shape[1] - frames + 1), (1,), generator=generator))
            segs.append(_crop(clips[i], start, frames, self.floor))
        arch = self.architecture()
        noise = torch.randn(size, arch.latent_channels, frames // arch.time_downsample, generator=generator)
        return {"logmel": torch.from_numpy(np.stack(segs)), "noise": noise}

    @torch.no_grad()
    def validate(self, ema: torch.nn.Module) -> float:
        """Mean |decode(mean(x)) - x| in natural-log mel units over the validation crops."""
        ema.eval()
        val = self.data.val.to(next(ema.parameters()).device)
        return float((ema(val) - val).abs().mean())

    @torch.no_grad()
    def preview(self, ema: torch.nn.Module, step: int) -> dict[str, bytes]:
        ema.eval()
        mel, val = self.cfg.mel, self.data.val[:2]
        recon = ema(val.to(next(ema.parameters()).device)).cpu()
        shown = [m.numpy() for m in val] + [m.numpy() for m in recon]
        titles = [f"input {k}" for k in range(len(val))] + [f"reconstruction {k}, step {step}" for k in range(len(val))]
        return {f"step-{step:06d}.png": spectrograms_png(shown, titles, frame_rate_hz=mel.sample_rate_hz / mel.hop_length_samples,
                                                          f_max_hz=mel.f_max_hz)}
