"""Training run configs. `TrainConfig` is the run's identity (MLflow params, content hash, the
checkpoint folder); `TrainLogistics` is how it runs (MLflow tags; never part of the hash)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas.configs import StrictConfig, config_hash
from schemas.diffusion import UNET_PRESETS, EDMConfig, unet_preset


class SolverConfig(StrictConfig):
    """What the training solver (ray_actors/solver.py) reads of every model kind's config."""

    domain: str = Field(..., min_length=1, description="what the model is of: a sound domain, or 'all'")
    batch_size: int = Field(16, ge=1, description="global batch, split evenly across workers")
    steps: int = Field(2000, ge=1)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(100, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    ema_decay: float = Field(0.999, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0
    checkpoint_every: int = Field(200, ge=1)
    samples_at: int = Field(3, ge=0, description="checkpoints (spread over the run) that write previews")
    init_from: str | None = Field(None, description="fine-tune: start from this trained model's weights (a model "
                                  "URI of the same kind and architecture; pinned to one version before the run)")


# cond_domain of a labelled conditional baseline: each item is conditioned on the same segment
# played by another of the labelled instruments, so one model learns every pair (any -> any)
ANY_OTHER = "*"


class TrainConfig(SolverConfig):
    """The diffusion denoiser (and the conditional baseline) on a log-mel feature set."""

    domain: str = Field(..., min_length=1, description="target sound domain, e.g. 'flute'")
    features_url: str = Field(..., description="a feature set (its manifest lists the shards)")
    role: str = "clean"
    cond_domain: str | None = Field(None, description="conditional baseline: the paired source domain "
                                                      "(rows joined on source_id and segment)")
    cond_role: str = "clean"
    # One label-conditional model of several domains (instruments): `domain` names the model, each
    # row of any of these domains is a training item with its domain's index as the class label.
    labels: tuple[str, ...] = Field((), description="instrument-conditional model: the domains it learns, "
                                    "in label order (empty: a model of `domain` alone)")
    label_dropout: float = Field(0.1, ge=0, lt=1, description="share of items trained with the null label, "
                                 "so the model also runs unconditionally (classifier-free guidance)")
    preset: str = "tiny"
    unet: dict = Field(default_factory=dict, description="overrides of the preset's UNetConfig fields")
    edm: EDMConfig = EDMConfig()
    crop_frames: int = Field(64, ge=8, description="random crop of each segment (frames)")
    validation_segments: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.preset not in UNET_PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; expected one of {sorted(UNET_PRESETS)}")
        unet = self.unet_config(128)
        if self.crop_frames % unet.downsampling_factor:
            raise ValueError(f"crop_frames={self.crop_frames} not divisible by the preset's "
                             f"downsampling factor {unet.downsampling_factor}")
        if self.labels and (self.cond_domain not in (None, ANY_OTHER) or len(set(self.labels)) != len(self.labels)
                            or self.domain in self.labels):
            raise ValueError(f"labels {self.labels}: expected distinct domains other than the model's name "
                             f"{self.domain!r}, and cond_domain unset or {ANY_OTHER!r} (conditioned on the same "
                             "segment played by another of the labelled instruments)")
        if self.cond_domain == ANY_OTHER and not self.labels:
            raise ValueError(f"cond_domain {ANY_OTHER!r} (any other instrument) needs labels: the instruments to pair")
        if self.cond_domain is not None and (self.cond_domain, self.cond_role) == (self.domain, self.role):
            raise ValueError("cond_domain/cond_role must differ from domain/role: a model conditioned on "
                             "its own target learns the identity")
        return self

    @property
    def paired(self) -> bool:
        return self.cond_domain is not None

    def config_hash(self) -> str:
        """Includes the preset's resolved fields: a preset that changes is a different model,
        so a run trained under the old preset is never found (and resumed) under the new one.
        Label fields are left out of an unlabelled model's hash, as before they existed."""
        d = self.model_dump(mode="json")
        if not self.labels:
            del d["labels"], d["label_dropout"]
        return config_hash({**d, "preset_fields": {**UNET_PRESETS[self.preset], **self.unet}})

    def unet_config(self, n_mels: int):
        return unet_preset(self.preset, **{"n_mels": n_mels, "cond_channels": int(self.paired),
                                           "num_labels": len(self.labels), **self.unet})


class TrainLogistics(StrictConfig):
    num_workers: int | None = Field(None, ge=0, description=(
        "Ray Train workers (DDP); 0 trains in this process; None: the job decides, 0 on one machine's CPUs, "
        "one per visible GPU with use_gpu, 2 on a cluster (infra.ray_cluster.default_train_workers)"))
    use_gpu: bool = False
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on GPU and on CPUs with AMX, fp32 elsewhere")
    out_url: str = Field(..., description="root of run folders (checkpoints, per-run files)")
    resume: bool = True
    experiment: str = "reinstrument-train"
    register_model: bool = True

    @model_validator(mode="after")
    def _check(self) -> "TrainLogistics":
        if self.use_gpu and self.num_workers == 0:
            raise ValueError("use_gpu needs Ray Train workers (num_workers >= 1)")
        return self


# Named training presets (issue: cpu-demo finishes on a 2-core CPU in <= 15 min; gpu is the
# difftransfer-sized network in bf16 on one H100).
TRAIN_PRESETS: dict[str, dict] = {
    "tiny": dict(preset="tiny", crop_frames=32, batch_size=8, steps=60, lr=2e-3, warmup_steps=5,
                 checkpoint_every=20, ema_decay=0.9, validation_segments=16),
    "cpu-demo": dict(preset="cpu-demo", crop_frames=64, batch_size=16, steps=3500, lr=1e-3, warmup_steps=200,
                     checkpoint_every=500, ema_decay=0.999, validation_segments=64),
    # latent feature sets: crops in latent frames (32 x 4 = 128 mel frames, 2.56 s: one whole segment)
    "cpu-latent": dict(preset="cpu-latent", crop_frames=32, batch_size=16, steps=3500, lr=1e-3, warmup_steps=200,
                       checkpoint_every=500, ema_decay=0.999, validation_segments=64),
    "gpu": dict(preset="difftransfer", crop_frames=128, batch_size=64, steps=20000, lr=2e-4, warmup_steps=1000,
                checkpoint_every=2000, ema_decay=0.9995, validation_segments=256),
}
