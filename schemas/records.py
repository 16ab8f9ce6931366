"""Typed records that cross the layers: what a trained model carries (`ModelCard`), where a run's
files live (`RunLayout`, `TrainRunLayout`, `SweepLayout`), a transform run's record (run.json),
a feature set's manifest extras, and a sweep's recommendation. JSON on disk stays readable and
versioned: each record reads the files written before it existed (their keys are its fields) and
rejects anything else with a message naming the key."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.configs import FeatureConfig, MelConfig, StrictConfig
from schemas.diffusion import SamplerConfig, WarmStartConfig


class ModelCard(StrictConfig):
    """What every trained model carries inside its checkpoint: kind, domain, the feature
    normalisation it was trained with, its front end and its training identity."""

    card_version: Literal[1] = 1
    kind: Literal["denoiser"] = "denoiser"
    domain: str
    role: str = "clean"
    mean: tuple[float, ...] = Field(..., description="per-bin (latent: per-channel) mean of the training features")
    std: tuple[float, ...]
    n_mels: int = Field(..., description="bins the model reads: mel bins, or a latent model's latent channels")
    mel: MelConfig
    # latent models (issue 19): the autoencoder their features came from, pinned; guides are
    # encoded and outputs decoded by it, and features of any other encoder are refused
    representation: Literal["logmel", "latent"] = "logmel"
    encoder: str | None = Field(None, description="latent: the pinned autoencoder URI (models:/name/version or shipped:...)")
    time_downsample: int = Field(1, ge=1, description="mel frames per model frame (latent: the encoder's)")
    features_url: str = ""
    features_fingerprint: str = ""
    train_config: dict = Field(default_factory=dict)
    # the conditional baseline: the paired source domain and its own statistics
    cond_domain: str | None = None
    cond_role: str | None = None
    cond_mean: tuple[float, ...] | None = None
    cond_std: tuple[float, ...] | None = None
    # a label-conditional model: the domains (instruments) it learned, index = class label
    labels: tuple[str, ...] = ()

    def label_of(self, target: str | None) -> int | None:
        """The class index of `target` (None: unlabelled model, or no target asked for)."""
        if not self.labels:
            if target not in (None, self.domain):
                raise ValueError(f"the model of {self.domain!r} has no instrument labels; it cannot be "
                                 f"asked for {target!r} (expected no target, or {self.domain!r})")
            return None
        if target is None:
            raise ValueError(f"the model {self.domain!r} learned several instruments {list(self.labels)}: "
                             "name the target (--target)")
        if target not in self.labels:
            raise ValueError(f"the model {self.domain!r} has no instrument {target!r}; "
                             f"expected one of {list(self.labels)}")
        return self.labels.index(target)

    @property
    def conditional(self) -> bool:
        return self.cond_domain is not None

    def guide_stats(self, conditional_input: bool = False) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Normalisation of what the model reads: the source domain's for a conditional model's
        condition, else the model's own domain's."""
        if conditional_input:
            if self.cond_mean is None or self.cond_std is None:
                raise ValueError(f"model of {self.domain!r} is not conditional: it has no source statistics")
            return self.cond_mean, self.cond_std
        return self.mean, self.std


class VocoderCard(StrictConfig):
    """What a trained vocoder carries: its front end (it decodes exactly these log-mels), what it
    learned from, and its training identity."""

    card_version: Literal[1] = 1
    kind: Literal["vocoder"] = "vocoder"
    mel: MelConfig
    domains: tuple[str, ...] | None = Field(None, description="None: every clean clip of the datasets")
    clips_urls: tuple[str, ...] = ()
    train_config: dict = Field(default_factory=dict)


class AutoencoderCard(StrictConfig):
    """What a trained mel autoencoder carries: the front end it encodes, its latent's shape, what
    it learned from, and its training identity."""

    card_version: Literal[1] = 1
    kind: Literal["autoencoder"] = "autoencoder"
    mel: MelConfig
    latent_channels: int
    time_downsample: int
    domains: tuple[str, ...] | None = Field(None, description="None: every clean clip of the datasets")
    clips_urls: tuple[str, ...] = ()
    train_config: dict = Field(default_factory=dict)


class RunLayout:
    """The one place that knows a transform run's folder (<out>/runs/<run_id>/): audio/<key>.flac
    (clip outputs), outputs/ (their table), recordings/<source path>.<target>.<fmt> (whole
    recordings), recording_rows/ (their table), quarantine/, inputs/ (a plain folder's
    ingestion), run.json."""

    RUNS = "runs"
    AUDIO = "audio"
    OUTPUTS = "outputs"
    RECORDINGS = "recordings"
    RECORDING_ROWS = "recording_rows"
    QUARANTINE = "quarantine"
    INPUTS = "inputs"
    RECORD = "run.json"

    @classmethod
    def folder(cls, run_id: str) -> str:
        return f"{cls.RUNS}/{run_id}"

    @classmethod
    def audio(cls, output_key: str) -> str:
        return f"{cls.AUDIO}/{output_key}.flac"

    @classmethod
    def recording(cls, name: str) -> str:
        return f"{cls.RECORDINGS}/{name}"


class TrainRunLayout:
    """A training run's folder (<out>/runs/<domain>-<config hash>/)."""

    RECORD = "run.json"          # {"mlflow_run_id": ...}: a resumed run logs to the same MLflow run
    LATEST = "latest.json"       # {"step", "checkpoint"}: the durable checkpoint, written last
    RESULT = "result.json"       # {"step", "val_loss", "val_split"}: written when training ends
    PROGRESS = "progress.json"   # rank 0's last report (the driver polls it)
    SAMPLES = "samples"

    @staticmethod
    def checkpoint(step: int) -> str:
        return f"checkpoints/step-{step:06d}.pt"


class SweepLayout:
    """A sweep's folder (<out>/sweeps/<sweep_id>/)."""

    SWEEPS = "sweeps"
    METRICS = "metrics.parquet"
    PLOT = "tradeoff.png"
    RECOMMENDATION = "recommendation.json"
    REPORT = "report"
    PAGE = "report.html"


class PinnedModels(StrictConfig):
    """Registry URIs resolved once per run (an alias never changes mid-run)."""

    model_uri: str
    model: str                    # name/version
    source_uri: str | None = None
    source_model: str | None = None
    vocoder_uri: str | None = None   # a trained vocoder (None: Griffin-Lim)
    vocoder: str | None = None
    decoder_uri: str | None = None   # a latent model decoded by another autoencoder's decoder (None: its own)
    decoder: str | None = None
    probe_uri: str | None = None     # --t-init auto: the instrument probe, pinned by its checksum


class TransformRecord(StrictConfig):
    """run.json of a transform run."""

    run_id: str
    mlflow_run_id: str
    pinned: PinnedModels
    inputs: str
    clips_url: str
    config: dict
    selection: dict


class OperatingPoint(StrictConfig):
    """The one point to run with and everything that produced it, so a consumer (the nightly
    job) applies it whole: tau_init or sigma_start, lambda, the sampler settings."""

    t_init: float | None = None
    sigma_start: float | None = None
    lam: float
    jd: float
    fad: float
    rule: str
    sampler: SamplerConfig

    def warm(self) -> WarmStartConfig:
        return WarmStartConfig(t_init=self.t_init, sigma_start=self.sigma_start, lam=self.lam)


class LambdaRecommendation(StrictConfig):
    t_init: float | None = None
    sigma_start: float | None = None
    jd: float
    fad: float
    rule: str


class Recommendation(StrictConfig):
    """recommendation.json of a sweep: per lambda (keyed by its `:g` label, as JSON needs string
    keys) and the operating point over all of them."""

    sweep_id: str
    model_version: str
    recommended: dict[str, LambdaRecommendation]
    operating_point: OperatingPoint | None = None  # absent in sweeps finished before it existed
    vocoder: str | None = None  # the decoder of every output (pinned); absent in older sweeps
    finished_at: str
    metrics_url: str
    plot_url: str
    report_url: str
    mlflow_run_id: str
    points: int
    task: str | None = None  # timbre | midi2real | enhance; absent in sweeps finished before it was recorded
    target: str | None = None  # the instrument of a model that learned several: one operating point per instrument


class FeatureSetExtra(StrictConfig):
    """A feature set's manifest extras (merged over every writer's commits)."""

    config: FeatureConfig
    inputs: dict[str, str] = Field(default_factory=dict,
                                   description="<clips url>#<clips shard sha256> -> the feature shard made of it")
    stats: dict[str, dict] = Field(default_factory=dict,
                                   description="per writer, per '<role>/<domain>': train-split sums (tasks/features.total_stats)")

    @classmethod
    def of(cls, extra: dict, url: str) -> "FeatureSetExtra":
        if "config" not in extra:
            raise ValueError(f"{url} is not a feature set (its manifest has no feature config); expected the "
                             "folder written by `reinstrument features` (…/logmel-<hash>)")
        return cls.model_validate(extra)
