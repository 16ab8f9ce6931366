"""Typed configs of the diffusion core: EDM preconditioning, denoiser networks, samplers, warm
initialization, long-audio windowing. Same rules as schemas.configs: unknown keys are errors,
configs are frozen, and their hash is the identity of the work they describe."""
from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from schemas.configs import StrictConfig


class EDMConfig(StrictConfig):
    """Karras et al. 2022, Table 1. Defaults suit per-bin standardised log-mels (std ~1): EDM's
    image recipe (sigma_data=0.5, P_mean=-1.2) scaled by 2, i.e. P_mean shifted by ln 2."""

    sigma_data: float = Field(1.0, gt=0)
    P_mean: float = -0.5
    P_std: float = Field(1.2, gt=0)
    sigma_min: float = Field(0.002, gt=0)
    sigma_max: float = Field(80.0, gt=0)

    @model_validator(mode="after")
    def _range(self) -> "EDMConfig":
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min={self.sigma_min} must be below sigma_max={self.sigma_max}")
        return self


class UNetConfig(StrictConfig):
    """A U-Net over (mel bins x frames).

    dims=2: one image channel (x freq_fold: bins folded into channels, bins/fold rows).
    dims=1: convolution over time only, the mel bins are the channels (several times cheaper
    on CPU). Each level halves the time axis (and the frequency axis when dims=2) except the
    last; other frame counts are edge-padded to a multiple of 2**(len(widths)-1) and cropped."""

    dims: Literal[1, 2] = 2
    n_mels: int = Field(128, ge=1)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    res_blocks_per_level: int = Field(2, ge=1)
    attention_levels: tuple[int, ...] = (2, 3)
    attention_heads: int = Field(4, ge=1)
    freq_fold: int = Field(1, ge=1, description="dims=2 only: mel bins folded into channels")
    cond_channels: int = Field(0, ge=0, description="extra input channels (conditional baseline)")
    num_labels: int = Field(0, ge=0, description="class labels (instruments) of a label-conditional model; "
                            "label num_labels is the null label (unconditional); 0 = no label input")
    embedding_dim: int = Field(256, ge=8)
    group_norm_groups: int = Field(8, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    local_head_channels: int = Field(0, ge=0, description="dims=1 only: channels of a 2D head over "
                                                             "(bins x frames) that refines the output; 0 = none")

    @model_validator(mode="after")
    def _consistent(self) -> "UNetConfig":
        if not self.widths:
            raise ValueError("widths must name at least one level")
        bad = [lv for lv in self.attention_levels if not 0 <= lv < len(self.widths)]
        if bad:
            raise ValueError(f"attention_levels {bad} outside 0..{len(self.widths) - 1}")
        for w in self.widths:
            if w % self.group_norm_groups or w % self.attention_heads:
                raise ValueError(f"width {w} not divisible by group_norm_groups={self.group_norm_groups} "
                                 f"and attention_heads={self.attention_heads}")
        if self.local_head_channels and (self.dims != 1 or self.local_head_channels % 4):
            raise ValueError(f"local_head_channels={self.local_head_channels} needs dims=1 and a multiple of 4 "
                             f"(a 2D network is already local in frequency)")
        if self.dims == 1 and self.freq_fold != 1:
            raise ValueError("freq_fold applies to dims=2 only (dims=1 already folds every bin)")
        if self.n_mels % self.freq_fold:
            raise ValueError(f"n_mels={self.n_mels} not divisible by freq_fold={self.freq_fold}")
        if self.dims == 2 and (self.n_mels // self.freq_fold) % self.downsampling_factor:
            raise ValueError(f"n_mels/freq_fold={self.n_mels // self.freq_fold} not divisible by the "
                             f"downsampling factor {self.downsampling_factor}")
        return self

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.widths) - 1)

    @property
    def data_channels(self) -> int:
        """Channels of one feature map as the network sees it."""
        return self.n_mels if self.dims == 1 else self.freq_fold


# Presets: name -> UNetConfig fields. n_mels and cond_channels stay free (data and method).
UNET_PRESETS: dict[str, dict] = {
    # tiny: attention only at the quarter-resolution level (attention cost is quadratic in positions).
    "tiny": dict(dims=2, widths=(16, 32, 32), res_blocks_per_level=1, attention_levels=(2,),
                 attention_heads=2, embedding_dim=32, group_norm_groups=4),
    # cpu-demo: 1D (several times cheaper than 2D on CPU) plus a small 2D head. The 1D body
    # mixes all bins in every layer and barely learns to remove small noise (at sigma=0.1 it
    # removed 15 % of it after 3,500 steps; outputs kept an audible speckle that FAD punishes
    # hard); 16 channels of 3x3 convolution over (bins x frames) fixed that at ~1.4x the cost.
    "cpu-demo": dict(dims=1, widths=(128, 192, 256), res_blocks_per_level=1, attention_levels=(2,),
                     attention_heads=4, embedding_dim=128, group_norm_groups=8, local_head_channels=16),
    # cpu-latent: the cpu-demo body on a latent's channels (no 2-D head: latent channels have no
    # frequency order for a 3x3 kernel to exploit)
    "cpu-latent": dict(dims=1, widths=(128, 192, 256), res_blocks_per_level=1, attention_levels=(2,),
                       attention_heads=4, embedding_dim=128, group_norm_groups=8),
    "difftransfer": dict(dims=2, widths=(64, 128, 256, 512), res_blocks_per_level=2,
                         attention_levels=(2, 3), attention_heads=4, embedding_dim=256),
}


def unet_preset(name: str, **overrides) -> UNetConfig:
    if name not in UNET_PRESETS:
        raise ValueError(f"unknown U-Net preset {name!r}; expected one of {sorted(UNET_PRESETS)}")
    return UNetConfig(**{**UNET_PRESETS[name], **overrides})


class SamplerConfig(StrictConfig):
    """Reverse-process solver and its Karras sigma grid (EDM eq. 5)."""

    name: Literal["euler", "heun", "dpmpp_2m"] = "heun"
    steps: int = Field(35, ge=1, description="N: reverse steps on the full grid")
    # K decouples the solver's cost from tau_init's meaning: tau_init still picks sigma_start on the
    # N-step grid (docs/design.md, τ_init), and the solver then takes K steps of a Karras grid from there.
    # Measured (README, "Quality per model evaluation"): DPM-Solver++(2M) with K 6 matches Heun on
    # the N grid (23-33 evaluations) at tau_init 0.65/0.6/0.5 with 6 evaluations.
    solver_steps: int | None = Field(None, ge=1, description=(
        "K: at most this many steps, on a Karras grid from sigma_start to sigma_min, for a warm start (None: "
        "the N grid's own remaining steps, also used when they are fewer than K). A cold start "
        "(sigma_start = sigma_max) always follows the N grid."))
    rho: float = Field(7.0, gt=0)
    # EDM's names (Karras et al. 2022, Algorithm 2), as EDM and k-diffusion expose them. The names
    # before issue 17 (churn, churn_sigma_min, ...) are still read, so older recommendation.json
    # files and nightly states load.
    S_churn: float = Field(0.0, ge=0, validation_alias=AliasChoices("S_churn", "churn"),
                           description="total churn over the N steps: gamma_i = min(S_churn/N, sqrt(2)-1) (heun only)")
    S_tmin: float = Field(0.0, ge=0, validation_alias=AliasChoices("S_tmin", "churn_sigma_min"),
                          description="churn only at sigma >= S_tmin")
    S_tmax: float = Field(float("inf"), ge=0, validation_alias=AliasChoices("S_tmax", "churn_sigma_max"),
                          description="churn only at sigma <= S_tmax")
    S_noise: float = Field(1.0, gt=0, validation_alias=AliasChoices("S_noise", "churn_noise"),
                           description="scale of the churn noise")

    @field_validator("S_tmax", mode="before")
    @classmethod
    def _no_upper_bound(cls, v):  # JSON has no infinity: pydantic writes it as null
        return float("inf") if v is None else v

    @model_validator(mode="after")
    def _churn_heun_only(self) -> "SamplerConfig":
        if self.S_churn > 0 and self.name != "heun":
            raise ValueError(f"churn is EDM Algorithm 2 (heun); sampler {self.name!r} takes S_churn=0")
        return self


# What transform, sweep, nightly and compare use when a config names no sampler (issue 22): the
# fewest evaluations measured inside the Heun-35 reference's 95 % intervals on the shipped models.
RECOMMENDED_SAMPLER = SamplerConfig(name="dpmpp_2m", steps=35, solver_steps=6)
# DDIB integrates upwards as well (an ODE both ways): Heun on the N grid, as before.
DDIB_SAMPLER = SamplerConfig()


class WarmStartConfig(StrictConfig):
    """Warm initialization (docs/design.md): start the reverse process from the guide.

    t_init is the fraction of the N reverse steps skipped from the noise end (0 = plain
    generation with lam=1, 1 = the guide itself); the run starts at grid index round(t_init*N).
    sigma_start instead starts at that sigma, on a Karras grid from sigma_start with N steps.
    Start state x = guide + lam * sigma_start * eps."""

    t_init: float | None = Field(None, ge=0, le=1)
    sigma_start: float | None = Field(None, ge=0)
    lam: float = Field(1.0, ge=0, description="noise scale lambda")

    @model_validator(mode="after")
    def _one_of(self) -> "WarmStartConfig":
        if (self.t_init is None) == (self.sigma_start is None):
            raise ValueError("give exactly one of t_init (fraction of steps skipped) or sigma_start")
        return self


class WindowConfig(StrictConfig):
    """Long audio: windows over frames with overlap, cross-faded."""

    window_frames: int = Field(128, ge=8)
    overlap_frames: int = Field(32, ge=0)
    shared_noise: bool = Field(True, description="DiffTransfer: one noise field for the whole item, "
                                                 "so overlapping windows start from the same noise")

    @model_validator(mode="after")
    def _overlap(self) -> "WindowConfig":
        if self.overlap_frames * 2 > self.window_frames:
            raise ValueError(f"overlap_frames={self.overlap_frames} must be at most half of "
                             f"window_frames={self.window_frames}")
        return self


class ModelConfig(StrictConfig):
    """A denoiser's architecture: the U-Net and the EDM preconditioning (what a checkpoint names)."""

    unet: UNetConfig
    edm: EDMConfig = EDMConfig()
