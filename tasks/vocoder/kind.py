"""The vocoder as a model kind of the training solver (tasks/solver.py): random one-second
segments of clean clips, their log-mel computed by the project's front end, and the spectral
losses of the decoded audio against the real segment. Validation decodes fixed segments of the
held-out clips; previews are those decodes as WAVs next to the originals' spectrograms."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from schemas.vocoder import DiscriminatorConfig, VocoderTrainConfig, VocosConfig
from tasks.audio import encode_audio
from tasks.features import LogMel
from tasks.metrics.embeddings import Embedding
from tasks.metrics.fad import embed_set
from tasks.metrics.frechet import GaussianStats, frechet_distance, gaussian_stats
from tasks.metrics.sources import AudioItem
from tasks.plots import spectrograms_png
from tasks.vocoder.discriminators import DiscriminatorLoss, feature_matching, generator_hinge
from tasks.vocoder.losses import mel_l1, multi_resolution_stft, spectrum_losses


@dataclass
class VocoderData:
    train: list[np.ndarray]        # mono float32 clips at the mel rate, sorted by clip ID
    val: torch.Tensor              # [n, samples]: fixed segments of held-out clips
    val_split: str
    val_clips: list[np.ndarray]    # the same held-out clips whole (the champion rule's copy-synthesis)
    reference: list[np.ndarray]    # real train clips, evenly spaced: the FAD reference of that rule


def highpass(audio: torch.Tensor, cutoff_hz: float, sample_rate_hz: int) -> torch.Tensor:
    """Brick-wall high-pass of [B, samples] segments (the DFT bins below `cutoff_hz` zeroed)."""
    spec = torch.fft.rfft(audio.float(), dim=-1)
    f = torch.fft.rfftfreq(audio.shape[-1], 1 / sample_rate_hz, device=audio.device)
    return torch.fft.irfft(spec * (f >= cutoff_hz), n=audio.shape[-1], dim=-1)


class VocoderLoss(torch.nn.Module):
    """forward(logmel, audio) -> per-example loss: MR-STFT + mel_weight * mel L1 + phase_weight *
    the head's spectrum losses against the real STFT, and with a discriminator its hinge and
    feature-matching terms (DDP wraps this). `last` keeps the step's (real, decoded) audio for the
    discriminator's own step."""

    def __init__(self, vocoder: torch.nn.Module, mel_weight: float, phase_weight: float = 0.0,
                 discriminator: torch.nn.Module | None = None, adversarial_weight: float = 0.0,
                 feature_matching_weight: float = 0.0, train_phase: str = "head"):
        super().__init__()
        self.vocoder, self.mel_weight, self.phase_weight = vocoder, mel_weight, phase_weight
        self.train_phase = train_phase
        self.front = LogMel(vocoder.cfg.mel)
        # a tuple, not an attribute: a registered submodule would put the discriminator's weights
        # in the generator's DDP bucket and optimizer; it has its own (DiscriminatorLoss)
        self._adversary = (discriminator,) if discriminator is not None else ()
        self.adversarial_weight, self.feature_matching_weight = adversarial_weight, feature_matching_weight
        self.last: dict[str, torch.Tensor] = {}

    def forward(self, logmel: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        v = self.vocoder
        mag, phase = v.spectrum(logmel)
        n = (logmel.shape[-1] - 1) * v.cfg.mel.hop_length_samples
        first = v.istft(torch.polar(mag, phase), n)  # the head's phase: its own losses need it either way
        if self.train_phase == "pghi":
            # judge the audio decoding makes with phase="pghi": the head's magnitude under the phase
            # PGHI integrates from it, a constant here (numba), so gradients reach the magnitude only
            y_hat = v.project(v.istft(torch.polar(mag, v.integrated_phase(mag)), n), mag)
        else:
            y_hat = v.project(first, mag)
        audio = audio[..., :n]
        target = logmel
        if v.cfg.min_frequency_hz > 0:
            # the targets lose what the head may not make: left in, the content below the passband
            # pulls the lowest open bin into a frame-rate tone (measured: JD 0.04 -> 0.18 in 1,000 steps)
            audio = highpass(audio, v.cfg.min_frequency_hz, v.cfg.mel.sample_rate_hz)
            with torch.no_grad():
                target = self.front(audio.float()).clone()[..., :logmel.shape[-1]]
        loss = multi_resolution_stft(y_hat, audio) + self.mel_weight * mel_l1(self.front.differentiable(y_hat.float(), eps=1e-12), target)
        if self.phase_weight:
            frames = phase.shape[-1]
            loss = loss + self.phase_weight * spectrum_losses(mag, phase, v.stft(audio)[..., :frames],
                                                              v.stft(first)[..., :frames])
        if self._adversary:
            d = self._adversary[0].requires_grad_(False)  # gradients reach ŷ only
            k, n = d.cfg.examples, d.cfg.segment_samples
            real, fake = audio[:k, :n], y_hat[:k, :n]
            self.last = {"real": real.detach(), "fake": fake.detach()}
            with torch.no_grad():  # the real side is a fixed target for feature matching
                real = d(real)
            fake = d(fake)
            adversarial = self.adversarial_weight * generator_hinge(fake) + \
                self.feature_matching_weight * feature_matching(real, fake)
            loss = loss + adversarial.mean()  # judged on the first examples; their mean counts for every one
        return loss


class VocoderKind:
    def __init__(self, cfg: VocoderTrainConfig, data: VocoderData):
        self.cfg, self.data = cfg, data
        self.front = LogMel(cfg.mel)
        self.segment = cfg.segment_frames * cfg.mel.hop_length_samples
        self._reference_stats: GaussianStats | None = None

    def architecture(self) -> VocosConfig:
        return self.cfg.vocos()

    def loss_module(self, model: torch.nn.Module, discriminator: torch.nn.Module | None = None) -> torch.nn.Module:
        cfg = self.cfg
        self._generator_loss = VocoderLoss(model, cfg.mel_loss_weight, cfg.phase_loss_weight, discriminator,
                                           cfg.adversarial_weight, cfg.feature_matching_weight, cfg.train_phase)
        return self._generator_loss

    def discriminator_architecture(self) -> DiscriminatorConfig | None:
        return self.cfg.discriminator if self.cfg.adversarial_weight > 0 else None

    def discriminator_loss_module(self, discriminator: torch.nn.Module) -> torch.nn.Module:
        return DiscriminatorLoss(discriminator)

    def discriminator_batch(self) -> dict[str, torch.Tensor]:
        return self._generator_loss.last

    def begin_step(self, step: int) -> None:
        """The vocoder's adversarial terms count from the first step (Vocos, HiFi-GAN)."""

    def _logmel(self, audio: torch.Tensor) -> torch.Tensor:
        return self.front(audio).clone()  # out of inference mode: the model's input in a graph

    def batch(self, generator: torch.Generator, size: int) -> dict[str, torch.Tensor]:
        clips = self.data.train
        idx = torch.randint(len(clips), (size,), generator=generator).tolist()
        segs = []
        for i in idx:
            x = clips[i]
            start = int(torch.randint(max(1, len(x) - self.segment + 1), (1,), generator=generator))
            seg = x[start:start + self.segment]
            segs.append(np.pad(seg, (0, self.segment - len(seg))))
        audio = torch.from_numpy(np.stack(segs))
        return {"logmel": self._logmel(audio), "audio": audio}

    @torch.no_grad()
    def validate(self, ema: torch.nn.Module) -> float:
        ema.eval()
        loss = VocoderLoss(ema, self.cfg.mel_loss_weight, self.cfg.phase_loss_weight, train_phase=self.cfg.train_phase)
        val = self.data.val.to(next(ema.parameters()).device)
        return float(loss(self._logmel(val.cpu()).to(val.device), val).mean())

    @torch.no_grad()
    def copy_synthesis_fad(self, model: torch.nn.Module, embedding: Embedding) -> float:
        """The champion rule's score (lower wins): the held-out clips through this front end and
        `model`, FAD against the real train clips' embeddings (their Gaussian computed once per
        kind, so two models are scored against the same reference on the same clips)."""
        model.eval()
        sr = self.cfg.mel.sample_rate_hz
        if self._reference_stats is None:
            self._reference_stats = gaussian_stats(embed_set(
                [AudioItem(f"ref-{k}", a, sr) for k, a in enumerate(self.data.reference)], embedding).embeddings)
        device = next(model.parameters()).device
        decoded = [AudioItem(f"val-{k}", model(self._logmel(torch.from_numpy(a)[None]).to(device))[0].float().cpu().numpy(), sr)
                   for k, a in enumerate(self.data.val_clips)]
        return float(frechet_distance(gaussian_stats(embed_set(decoded, embedding).embeddings), self._reference_stats))

    @torch.no_grad()
    def preview(self, ema: torch.nn.Module, step: int) -> dict[str, bytes]:
        ema.eval()
        mel, val = self.cfg.mel, self.data.val[:2]
        logmel = self._logmel(val)
        y = ema(logmel.to(next(ema.parameters()).device)).cpu()
        shown = [m.numpy() for m in logmel] + [m.numpy() for m in self.front(y)]
        titles = [f"real {k}" for k in range(len(val))] + [f"decoded {k}, step {step}" for k in range(len(val))]
        files = {f"step-{step:06d}.png": spectrograms_png(shown, titles, frame_rate_hz=mel.sample_rate_hz / mel.hop_length_samples,
                                                           f_max_hz=mel.f_max_hz)}
        for k, audio in enumerate(y.numpy()):
            files[f"step-{step:06d}-{k}.wav"] = encode_audio(audio, mel.sample_rate_hz)
        return files
