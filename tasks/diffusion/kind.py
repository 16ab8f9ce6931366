"""The diffusion denoiser as a model kind of the training solver (tasks/solver.py): the EDM
objective (Karras et al. 2022, eq. 8) on random crops of normalised log-mel segments, with the
paired source segments as the condition for the conditional baseline (DiffTransfer). Previews
are samples of the EMA model from noise (Heun, EDM Algorithm 1) as spectrograms and audio."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from schemas.diffusion import ModelConfig
from schemas.records import ModelCard
from schemas.training import TrainConfig
from tasks.audio import encode_audio
from tasks.diffusion.conditional import conditioned, labelled
from tasks.diffusion.noise import ItemNoise, item_seed
from tasks.diffusion.precond import EDMLoss
from tasks.diffusion.samplers import heun, karras_sigmas
from tasks.diffusion.train import crop_batch, validation_loss
from tasks.diffusion.train_data import TrainData, denormalise
from tasks.diffusion.vocoder import Vocoder
from tasks.plots import spectrograms_png

PREVIEW_STEPS = 18  # Heun steps of a preview sample: EDM's CIFAR-10 setting, enough to hear the model


class DenoiserKind:
    def __init__(self, cfg: TrainConfig, card: ModelCard, data: TrainData, vocoder: Vocoder, *,
                 preview_items: int = 2, preview_steps: int = PREVIEW_STEPS,
                 to_logmel: Callable[[torch.Tensor], torch.Tensor] | None = None):
        """`to_logmel`: a latent model's decoder ([bins, frames] of its features -> log-mel)."""
        self.cfg, self.card, self.data, self.vocoder = cfg, card, data, vocoder
        self.to_logmel = to_logmel or (lambda x: x)
        self.preview_items, self.preview_steps = preview_items, preview_steps

    def architecture(self) -> ModelConfig:
        return ModelConfig(unet=self.cfg.unet_config(self.card.n_mels), edm=self.cfg.edm)

    def loss_module(self, model: torch.nn.Module) -> torch.nn.Module:
        return EDMLoss(model)

    def batch(self, generator: torch.Generator, size: int) -> dict[str, torch.Tensor]:
        d = self.data
        idx = torch.randint(d.train_x.shape[0], (size,), generator=generator)
        x, mask, cond = crop_batch(d.train_x, d.train_valid, idx, self.cfg.crop_frames, generator, d.train_c)
        # the draw order (crop, sigma, noise) is the run's identity: resumed runs repeat it exactly
        edm = self.cfg.edm  # ln(sigma) ~ N(P_mean, P_std^2) (EDM Table 1), as EDMPrecond.sample_sigma draws it
        sigma = (edm.P_mean + edm.P_std * torch.randn(size, generator=generator)).exp()
        batch = {"y": x, "sigma": sigma, "noise": torch.randn(x.shape, generator=generator), "mask": mask}
        if d.train_y is not None:  # drawn last: an unlabelled run's draws stay as they were
            null = torch.rand(size, generator=generator) < self.cfg.label_dropout
            batch["label"] = torch.where(null, len(self.cfg.labels), d.train_y[idx])
        return batch | ({"cond": cond} if cond is not None else {})

    def validate(self, ema: torch.nn.Module) -> float:
        d = self.data
        return validation_loss(ema, d.val_x, d.val_valid, self.cfg.crop_frames, cond=d.val_c, labels=d.val_y)

    def preview(self, ema: torch.nn.Module, step: int) -> dict[str, bytes]:
        """Samples from noise (conditioned on the first validation sources for the conditional
        baseline): one spectrogram PNG and a WAV per sample."""
        cfg, card, mel, n = self.cfg, self.card, self.card.mel, self.preview_items
        frames = cfg.crop_frames * max(1, 128 // cfg.crop_frames)
        cond = self.data.val_c
        if cond is not None:
            n, frames = min(n, cond.shape[0]), min(frames, cond.shape[-1])
            cond = cond[:n, :, :frames]
        dev = next(ema.parameters()).device
        seeds = [item_seed(cfg.seed, "sample", k) for k in range(n)]
        x = cfg.edm.sigma_max * ItemNoise(seeds)(torch.zeros(n, card.n_mels, frames))
        names, labels = [cfg.domain] * n, None
        if cfg.labels:  # one sample per instrument in turn
            labels = torch.arange(n) % len(cfg.labels)
            names = [cfg.labels[int(k)] for k in labels]
        if cond is not None:
            denoiser = conditioned(ema.eval(), cond.to(dev), None if labels is None else labels.to(dev))
        else:
            denoiser = ema.eval() if labels is None else labelled(ema.eval(), labels.to(dev))
        with torch.no_grad():
            y = heun(denoiser, x.to(dev), karras_sigmas(self.preview_steps, cfg.edm.sigma_min, cfg.edm.sigma_max)).cpu()
        logmels = [self.to_logmel(denormalise(s, card.mean, card.std)).numpy() for s in y]
        titles = [f"{names[k]} sample {k}, step {step}" for k in range(n)]
        shown = list(logmels)
        if cond is not None:
            shown += [self.to_logmel(denormalise(c, *card.guide_stats(conditional_input=True))).numpy() for c in cond]
            titles += [f"source {k} ({cfg.cond_domain})" for k in range(n)]
        files = {f"step-{step:06d}.png": spectrograms_png(shown, titles, frame_rate_hz=mel.sample_rate_hz / mel.hop_length_samples,
                                                           f_max_hz=mel.f_max_hz)}
        for k, m in enumerate(logmels):
            audio = self.vocoder(m)
            files[f"step-{step:06d}-{k}.wav"] = encode_audio(0.9 * audio / max(1e-6, float(np.abs(audio).max())),
                                                             mel.sample_rate_hz)
        return files
