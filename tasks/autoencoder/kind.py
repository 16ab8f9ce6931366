"""The mel autoencoder as a model kind of the training solver (tasks/solver.py): random crops of
the clean clips' log-mels (the project's front end), the L1 of the scaled reconstruction plus
kl_weight x KL, with the posterior sampled by the reparameterisation trick (its noise drawn from the
step's generator, so a resumed run repeats it); optionally, a decoder fine-tune against a mel
PatchGAN with the encoder frozen. Validation and the champion rule: the posterior
mean's reconstruction L1 in natural-log units on fixed crops of held-out clips."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from schemas.autoencoder import AutoencoderConfig, AutoencoderTrainConfig, MelDiscriminatorConfig
from tasks.autoencoder.model import MelAutoencoder, kl_divergence
from tasks.clean_audio import clean_clips
from tasks.features import LogMel, logmel_batch
from tasks.plots import spectrograms_png
from tasks.vocoder.discriminators import DiscriminatorLoss, feature_matching, generator_hinge


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
    """forward(logmel, noise) -> per-example L1 (scaled log-mel units) + kl_weight * KL, and with a
    discriminator its hinge and feature-matching terms on the scaled reconstruction. `last` keeps
    the step's (real, reconstructed) scaled mels for the discriminator's own step."""

    def __init__(self, model: MelAutoencoder, kl_weight: float, discriminator: torch.nn.Module | None = None,
                 adversarial_weight: float = 0.0, feature_matching_weight: float = 0.0, freeze_encoder: bool = False):
        super().__init__()
        self.model, self.kl_weight, self.freeze_encoder = model, kl_weight, freeze_encoder
        if freeze_encoder:
            # no gradient, so AdamW skips these weights entirely (no decay either) and the EMA's
            # lerp toward an unchanged value returns it exactly: the encoder stays bit for bit
            model.encoder.requires_grad_(False)
        # a tuple: as a submodule its weights would join the decoder's DDP bucket and optimizer
        self._adversary = (discriminator,) if discriminator is not None else ()
        self.adversarial_weight, self.feature_matching_weight = adversarial_weight, feature_matching_weight
        self.last: dict[str, torch.Tensor] = {}
        self.judged = True  # the adversarial terms count (AutoencoderKind.begin_step: after the warm-up)

    def forward(self, logmel: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        m = self.model
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            mean, logvar = m.encode(logmel)
        z = mean + (0.5 * logvar).exp() * noise  # reparameterisation (Kingma & Welling 2014, eq. 10)
        recon = m.decode(z, logmel.shape[-1])
        scaled = (recon - m.cfg.input_offset) / m.cfg.input_scale
        target = (logmel - m.cfg.input_offset) / m.cfg.input_scale
        loss = (scaled - target).abs().flatten(1).mean(1) + self.kl_weight * kl_divergence(mean, logvar)
        if self._adversary:
            d = self._adversary[0].requires_grad_(False)  # gradients reach the decoder only
            self.last = {"real": target.detach(), "fake": scaled.detach()}
            if not self.judged:
                return loss
            fake = d(scaled)
            adversarial = generator_hinge(fake)
            if self.feature_matching_weight:
                with torch.no_grad():  # the real side is a fixed target for feature matching
                    real = d(target)
                adversarial = adversarial + self.feature_matching_weight * feature_matching(real, fake)
            loss = loss + self.adversarial_weight * self._balance(loss.mean(), adversarial.mean()) * adversarial
        return loss

    def _balance(self, reconstruction: torch.Tensor, adversarial: torch.Tensor) -> torch.Tensor:
        """Taming Transformers' adaptive weight (Esser et al. 2021, eq. 7): the ratio of the two
        terms' gradient norms at the decoder's last layer, so the adversarial term pulls as hard as
        the reconstruction does whatever the discriminator's scale (measured: at a fixed weight, a
        warmed-up discriminator's feature matching spiked the loss from 0.06 to 5.4 and the GAN
        collapsed). Outside autograd (validation) the weight is 1."""
        if not torch.is_grad_enabled():
            return torch.ones(())
        last = self.model.decoder[-1].weight
        g_rec, = torch.autograd.grad(reconstruction, last, retain_graph=True)
        g_adv, = torch.autograd.grad(adversarial, last, retain_graph=True)
        return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, 1e4).detach()


class AutoencoderKind:
    def __init__(self, cfg: AutoencoderTrainConfig, data: AutoencoderData):
        self.cfg, self.data = cfg, data
        self.floor = math.log(cfg.mel.log_floor)

    def architecture(self) -> AutoencoderConfig:
        return self.cfg.autoencoder()

    def loss_module(self, model: torch.nn.Module, discriminator: torch.nn.Module | None = None) -> torch.nn.Module:
        cfg = self.cfg
        self._loss = AutoencoderLoss(model, cfg.kl_weight, discriminator, cfg.adversarial_weight,
                                     cfg.feature_matching_weight, cfg.freeze_encoder)
        return self._loss

    def discriminator_architecture(self) -> MelDiscriminatorConfig | None:
        return self.cfg.discriminator if self.cfg.adversarial_weight > 0 else None

    def discriminator_loss_module(self, discriminator: torch.nn.Module) -> torch.nn.Module:
        return DiscriminatorLoss(discriminator)

    def discriminator_batch(self) -> dict[str, torch.Tensor]:
        return self._loss.last

    def begin_step(self, step: int) -> None:
        self._loss.judged = step >= self.cfg.adversarial_start

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
