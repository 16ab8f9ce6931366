"""The neural vocoder: its architecture (a Vocos-style ConvNeXt backbone with an inverse-STFT
head, Siuzdak 2023) and its training config. The mel front end is the project's (MelConfig): a
vocoder decodes exactly what the features and the denoisers produce."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas.configs import MelConfig, StrictConfig
from schemas.training import SolverConfig


class VocosConfig(StrictConfig):
    mel: MelConfig = MelConfig()
    dim: int = Field(192, ge=8, description="backbone channels")
    intermediate: int = Field(576, ge=8, description="ConvNeXt MLP width")
    layers: int = Field(6, ge=1)
    kernel: int = Field(7, ge=1, description="depthwise convolution over frames (odd)")
    # Why: the linear head makes each frame's log-magnitude an affine function of `dim` features,
    # so it lies in a `dim`-dimensional subspace of the 641 bins. Measured (demo corpus, 15 test
    # clips, PGHI): the clips' true log-magnitude projected onto the best 192-dimensional subspace
    # of train frames scores violin FAD 3.28 (480: 2.75; unprojected 2.78). Trained from the shipped
    # weights with 1024 (README, "Is it the head's rank?"), it did not beat the linear head: 0 in the
    # presets, and 0 keeps the linear head alone, as checkpoints saved before this field.
    head_hidden: int = Field(0, ge=0, description="width of a GELU MLP added to the head's log-magnitude "
                             "(its last layer starts at zero, so a trained model grows into it unchanged); 0: none")
    n_fft: int = Field(1280, ge=16, description="inverse-STFT size; hop is the mel hop (Vocos: n_fft = 4 hop)")
    # 0 by default so that a checkpoint saved before this field decodes exactly as it did; the
    # presets set it, and a checkpoint's decode is always fixed by its own bytes
    min_frequency_hz: float = Field(0.0, ge=0, description="the head's bins centred below this are silent (the "
                                    "frame-rate beat of sub-bass; 0 keeps all, as checkpoints saved before it)")
    consistency_iters: int = Field(0, ge=0, le=32, description="STFT-consistency projections after the "
                                   "inverse STFT (Griffin-Lim steps started from the predicted phase)")
    # "head" by default so that a checkpoint saved before this field decodes exactly as it did.
    # Why "pghi" in the presets: the head's magnitude is close to the truth, its phase is not
    # (demo flute copy-synthesis FAD: its magnitude with the true phase 2.57, with its own phase
    # 4.06, with the phase PGHI integrates from its magnitude 2.83; real clips 2.47)
    phase: Literal["head", "pghi"] = Field("head", description="decoding's phase: the head's prediction (then "
                                           "`consistency_iters` projections), or integrated from the head's "
                                           "magnitude by RTPGHI (tasks/vocoder/pghi.py); training always "
                                           "trains the head's phase (its losses; VocoderTrainConfig.train_phase "
                                           "says which phase the output losses judge)")
    # 1e-5 rather than ltfat's 1e-3 for speed: the FAD is the same, but at 1e-3 the quiet bins'
    # random phase raised LSD (flute 9.06 -> 9.55 dB, above Griffin-Lim's 9.01)
    pghi_tolerance: float = Field(1e-5, gt=0, lt=1, description="PGHI: bins below this fraction of their "
                                  "frame's peak get a fixed random phase instead of an integrated one")

    @model_validator(mode="after")
    def _check(self) -> "VocosConfig":
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel={self.kernel} must be odd (same-length convolution)")
        if self.n_fft < self.mel.hop_length_samples:
            raise ValueError(f"n_fft={self.n_fft} is below the hop {self.mel.hop_length_samples}: frames would not overlap")
        return self


class DiscriminatorConfig(StrictConfig):
    """The adversaries of tasks/vocoder/discriminators.py (HiFi-GAN's periods, UnivNet's resolutions)."""
    periods: tuple[int, ...] = Field((2, 3, 5, 7, 11), min_length=1, description="multi-period discriminator folds")
    period_channels: tuple[int, ...] = Field((8, 32, 64, 64), min_length=2,
                                             description="channels per period-discriminator layer (HiFi-GAN: 32..1024)")
    resolutions: tuple[tuple[int, int], ...] = Field(((512, 128), (1024, 256), (2048, 512)),
                                                     description="(n_fft, hop) per spectrogram discriminator")
    resolution_channels: int = Field(16, ge=1, description="UnivNet: 32")
    # What keeps a step affordable on 2 cores (measured: HiFi-GAN/UnivNet widths on 16 x 1 s cost
    # ~8 s per step against the generator's 0.3 s): the discriminators judge a crop of a few examples.
    examples: int = Field(8, ge=1, description="examples of each batch the discriminators see (the first ones)")
    segment_samples: int = Field(8000, ge=1024, description="samples of each example they see (from its start)")


# Above the frame rate (50 Hz at hop 320): the bin centred on it is the one the head locks to the
# frame rate. Measured with the shipped v4 on 15 demo violin clips, copy-synthesis JD by cutoff:
# 50 Hz 0.064, 62.5 Hz 0.046, 80 Hz 0.041 (Griffin-Lim 0.039). 60 keeps cello's C2 (65 Hz).
MIN_FREQUENCY_HZ = 60.0

VOCODER_ARCHITECTURES: dict[str, dict] = {
    "tiny": dict(dim=16, intermediate=32, layers=1, n_fft=640, consistency_iters=1, phase="pghi", min_frequency_hz=MIN_FREQUENCY_HZ),
    "cpu": dict(dim=192, intermediate=576, layers=6, consistency_iters=1, phase="pghi", min_frequency_hz=MIN_FREQUENCY_HZ),
    "gpu": dict(dim=512, intermediate=1536, layers=8, consistency_iters=1, phase="pghi", min_frequency_hz=MIN_FREQUENCY_HZ),  # Vocos' size
}


class VocoderTrainConfig(SolverConfig):
    """A vocoder trained on the clean clips of clips datasets (all domains unless named), with
    spectral losses (multi-resolution STFT + mel L1, Vocos' and DDSP's reconstruction terms)."""

    domain: str = Field("all", min_length=1, description="the domains trained on, for names and logs")
    clips_urls: tuple[str, ...] = Field(..., min_length=1, description="clips datasets to learn from")
    domains: tuple[str, ...] | None = Field(None, description="only these domains (default every clean clip)")
    preset: str = "tiny"
    architecture: dict = Field(default_factory=dict, description="overrides of the preset's VocosConfig fields")
    mel: MelConfig = MelConfig()
    segment_frames: int = Field(50, ge=4, description="frames per training segment (50 = 1 s at hop 320)")
    mel_loss_weight: float = Field(45.0, ge=0, description="Vocos' weight of the mel L1 term")
    phase_loss_weight: float = Field(1.0, ge=0, description="weight of the head-spectrum losses (APNet: amplitude, "
                                     "anti-wrapping phase, consistency); 0 trains on the output losses alone")
    train_phase: Literal["head", "pghi"] = Field("head", description="the phase of the audio the losses and "
                                                 "discriminators judge: the head's, or PGHI's from the predicted "
                                                 "magnitude (held constant), which is what `phase` pghi decodes")
    validation_clips: int = Field(16, ge=1)
    adversarial_weight: float = Field(0.0, ge=0, description="weight of the generator's hinge loss against the "
                                      "discriminators (Vocos: 1); 0 trains without any discriminator")
    feature_matching_weight: float = Field(2.0, ge=0, description="weight of HiFi-GAN's feature-matching loss "
                                           "(used only with adversarial_weight > 0)")
    discriminator: DiscriminatorConfig = DiscriminatorConfig()

    @model_validator(mode="after")
    def _check(self) -> "VocoderTrainConfig":
        if self.preset not in VOCODER_ARCHITECTURES:
            raise ValueError(f"unknown vocoder preset {self.preset!r}; expected one of {sorted(VOCODER_ARCHITECTURES)}")
        self.vocos()
        return self

    def vocos(self) -> VocosConfig:
        return VocosConfig(mel=self.mel, **{**VOCODER_ARCHITECTURES[self.preset], **self.architecture})


VOCODER_PRESETS: dict[str, dict] = {
    "tiny": dict(preset="tiny", batch_size=4, steps=20, lr=2e-3, warmup_steps=2, checkpoint_every=10,
                 ema_decay=0.9, segment_frames=16, validation_clips=2,
                 discriminator=dict(periods=(2, 3), period_channels=(4, 8), resolutions=((256, 64),),
                                    resolution_channels=4, examples=2, segment_samples=2048)),
    # ~0.14 s per step on 2 AMX cores in bf16 (~0.3 s in fp32): 24,000 steps in about an hour
    "cpu": dict(preset="cpu", batch_size=16, steps=24000, lr=1e-3, warmup_steps=200, checkpoint_every=1000,
                ema_decay=0.999, segment_frames=50),
    "gpu": dict(preset="gpu", batch_size=64, steps=200000, lr=5e-4, warmup_steps=1000, checkpoint_every=5000,
                ema_decay=0.9995, segment_frames=100),
}
