"""The mel autoencoder: its architecture (tasks/autoencoder/model.py) and training config. It
compresses the project's log-mel (128 bins at 50 frames/s: 6,400 values per audio-second) into a
latent of `latent_channels` values per latent frame at 50 / `time_downsample` frames/s; the latent
diffusion models run there, and the decoder brings their outputs back to log-mel for the vocoder."""
from __future__ import annotations

from pydantic import Field, model_validator

from schemas.configs import MelConfig, StrictConfig
from schemas.training import SolverConfig


class AutoencoderConfig(StrictConfig):
    mel: MelConfig = MelConfig()
    latent_channels: int = Field(32, ge=1, description="values per latent frame")
    time_downsample: int = Field(4, ge=1, description="mel frames per latent frame (a power of 2: one strided "
                                 "convolution per factor 2)")
    dim: int = Field(256, ge=8, description="channels of the ConvNeXt stacks")
    intermediate: int = Field(768, ge=8, description="ConvNeXt MLP width")
    blocks: int = Field(2, ge=1, description="ConvNeXt blocks per resolution, in the encoder and in the decoder")
    kernel: int = Field(7, ge=1, description="depthwise convolution over frames (odd)")
    # Fixed constants, not data statistics: the autoencoder is shared by every domain, and its input
    # scaling must not change with the corpus it was trained on. Natural-log mels span about
    # ln(1e-5) = -11.5 (the floor) to +3; this maps them to roughly [-1.6, 2].
    input_offset: float = Field(-5.0, description="log-mel -> (log-mel - offset) / scale before the encoder")
    input_scale: float = Field(4.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "AutoencoderConfig":
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel={self.kernel} must be odd (same-length convolution)")
        if self.time_downsample & (self.time_downsample - 1):
            raise ValueError(f"time_downsample={self.time_downsample} must be a power of 2 (1, 2, 4, 8, ...)")
        return self

    @property
    def values_per_second(self) -> float:
        """Latent values per audio-second (log-mel: n_mels x frame rate = 6,400)."""
        frame_rate = self.mel.sample_rate_hz / self.mel.hop_length_samples
        return self.latent_channels * frame_rate / self.time_downsample

    @property
    def compression(self) -> float:
        """How many times fewer values per second than the log-mel it encodes."""
        return self.mel.n_mels * self.time_downsample / self.latent_channels


class MelDiscriminatorConfig(StrictConfig):
    """The adversary of a decoder fine-tune (tasks/autoencoder/discriminator.py): a PatchGAN over
    the scaled log-mel as an image (frequency x frames), as the mel-VAE of AudioLDM and the image
    VAE of latent diffusion train against (Isola et al. 2017, §3.2.2)."""
    channels: tuple[int, ...] = Field((16, 32, 64, 64), min_length=2, description="channels per layer; every "
                                      "layer but the last halves frequency and frames (pix2pix: 64..512)")
    kernel: int = Field(5, ge=3, description="square kernel of every layer (odd)")

    @model_validator(mode="after")
    def _check(self) -> "MelDiscriminatorConfig":
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel={self.kernel} must be odd (same-size padding)")
        return self


AUTOENCODER_ARCHITECTURES: dict[str, dict] = {
    "tiny": dict(latent_channels=8, time_downsample=4, dim=16, intermediate=32, blocks=1),
    # 32 channels at 12.5 frames/s: 400 values per second, 16x fewer than log-mel
    "cpu": dict(latent_channels=32, time_downsample=4, dim=256, intermediate=512, blocks=2),
    "gpu": dict(latent_channels=32, time_downsample=4, dim=512, intermediate=1536, blocks=3),
}


class AutoencoderTrainConfig(SolverConfig):
    """A mel autoencoder trained on the clean clips of clips datasets (all domains unless named):
    L1 reconstruction of the scaled log-mel plus a small KL term (a VAE, as AudioLDM's mel-VAE,
    without its perceptual and adversarial terms, whose pretrained weights are not available here)."""

    domain: str = Field("all", min_length=1, description="the domains trained on, for names and logs")
    clips_urls: tuple[str, ...] = Field(..., min_length=1, description="clips datasets to learn from")
    domains: tuple[str, ...] | None = Field(None, description="only these domains (default every clean clip)")
    preset: str = "tiny"
    architecture: dict = Field(default_factory=dict, description="overrides of the preset's AutoencoderConfig fields")
    mel: MelConfig = MelConfig()
    segment_frames: int = Field(128, ge=4, description="mel frames per training crop (a multiple of time_downsample)")
    kl_weight: float = Field(1e-4, ge=0, description="weight of KL(q(z|x) || N(0, I)) per latent value, against the "
                             "L1 per mel value: small, so the latent keeps detail yet stays bounded for diffusion")
    validation_clips: int = Field(16, ge=1)
    # The decoder fine-tune (measured on the shipped autoencoder: the L1 decoder loses most of the
    # log-mel's modulation above 6 Hz, and violin copy-synthesis FAD through it is 10.7 against the
    # vocoder's 4.7 on the real mel): a discriminator penalises the smoothness L1 leaves, and with
    # the encoder frozen every latent, feature set and latent denoiser of the base stays valid.
    freeze_encoder: bool = Field(False, description="train the decoder only (needs init_from): the encoder's "
                                 "weights, and so every latent it encodes, stay bit for bit those of the start")
    adversarial_weight: float = Field(0.0, ge=0, description="weight of the decoder's hinge loss against the mel "
                                      "discriminator, times the adaptive weight that matches its gradient to the "
                                      "reconstruction's (Esser et al. 2021, eq. 7; they use 0.8); 0 trains without one")
    feature_matching_weight: float = Field(0.0, ge=0, description="weight of the discriminator feature-matching "
                                           "L1 (HiFi-GAN eq. 3) against the hinge loss, inside the adaptively weighted term")
    # measured: judged by a random discriminator from the first step, feature matching pulls the
    # decoder onto whatever the discriminator sees and its hinge loss stays at 2.0 (chance) for 500
    # steps; trained alone first, it separates the L1 decoder's mels from real ones in ~150 steps
    adversarial_start: int = Field(0, ge=0, description="steps the discriminator trains alone before the decoder's "
                                   "adversarial terms join (its warm-up)")
    discriminator: MelDiscriminatorConfig = MelDiscriminatorConfig()

    @model_validator(mode="after")
    def _check(self) -> "AutoencoderTrainConfig":
        if self.freeze_encoder and not self.init_from:
            raise ValueError("freeze_encoder needs init_from (the trained autoencoder whose encoder to keep); "
                             "a frozen random encoder encodes nothing")
        if self.preset not in AUTOENCODER_ARCHITECTURES:
            raise ValueError(f"unknown autoencoder preset {self.preset!r}; expected one of {sorted(AUTOENCODER_ARCHITECTURES)}")
        arch = self.autoencoder()
        if self.segment_frames % arch.time_downsample:
            raise ValueError(f"segment_frames={self.segment_frames} is not a multiple of time_downsample={arch.time_downsample}")
        return self

    def autoencoder(self) -> AutoencoderConfig:
        return AutoencoderConfig(mel=self.mel, **{**AUTOENCODER_ARCHITECTURES[self.preset], **self.architecture})


AUTOENCODER_PRESETS: dict[str, dict] = {
    "tiny": dict(preset="tiny", batch_size=4, steps=20, lr=2e-3, warmup_steps=2, checkpoint_every=10,
                 ema_decay=0.9, segment_frames=32, validation_clips=2),
    # ~0.23 s per step on 2 AMX cores in bf16: 10,000 steps in about 40 min
    "cpu": dict(preset="cpu", batch_size=16, steps=10000, lr=1e-3, warmup_steps=200, checkpoint_every=1000,
                ema_decay=0.999, segment_frames=128),
    "gpu": dict(preset="gpu", batch_size=64, steps=200000, lr=5e-4, warmup_steps=1000, checkpoint_every=5000,
                ema_decay=0.9995, segment_frames=256),
}
