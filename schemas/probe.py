"""The instrument probe's training config and card, and the adaptive tau_init search's config
(tasks/probe.py, tasks/auto_t_init.py)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from schemas.configs import StrictConfig

SHIPPED_PROBE = "shipped:instrument-probe"


class ProbeConfig(StrictConfig):
    """How `reinstrument train-probe` fits the probe on a corpus's clips."""

    crop_frames: int = Field(128, ge=8, description="log-mel frames per training crop: a transform window's length, "
                             "so the probe reads a window as it reads a clip")
    crops_per_clip: int = Field(2, ge=1, description="random crops per clip (drawn from the clip ID and the seed)")
    l2: float = Field(1e-3, gt=0, description="L2 weight of the logistic regression")
    instruments: tuple[str, ...] = Field((), description="labels to learn (default: every instrument of the corpus)")
    seed: int = 0


class ProbeScoreRow(StrictConfig):
    collection: str
    instrument: str
    soundfont: str
    clips: int
    accuracy: float


class ProbeCard(StrictConfig):
    """card.json beside probe.pt: what it learned, from what, and how well it labels clips it never saw."""

    kind: str = "probe"
    sha256: str
    bytes: int
    labels: tuple[str, ...]
    config: ProbeConfig
    corpus: str
    training_clips: int
    wall_time_s: float
    accuracy: tuple[ProbeScoreRow, ...] = ()
    machine: dict = Field(default_factory=dict)
    commands: dict[str, str] = Field(default_factory=dict)


class AutoStart(StrictConfig):
    """`--t-init auto`: per clip, the largest candidate tau_init (the most faithful start) whose
    denoised estimate x̂0 the probe labels the target with P >= threshold; with none, the candidate
    where P is highest. Candidates below the lowest are never tried: the lowest is the JD budget.
    For enhancement (rule noise) the start follows the input's estimated degradation instead."""

    rule: Literal["probe", "noise"] | None = Field(None, description="probe: the instrument probe on x̂0 (re-"
                                                  "instrumentation); noise: the input's own degradation level, "
                                                  "DMID-style (enhancement); default: noise for the enhance task, "
                                                  "else probe")
    candidates: tuple[float, ...] = Field((0.8, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45),
                                          description="tau_init values tried, each by one denoiser call per window")
    residual_ratio: float = Field(0.5, gt=0, lt=1, description="noise rule: the largest sigma_start at which the "
                                  "denoiser still removes at least this share of sigma from the input")
    threshold: float = Field(0.5, gt=0, lt=1, description="P(target | x̂0) that counts as 'is the target'")
    probe: str = Field(SHIPPED_PROBE, pattern=r"^(shipped:[A-Za-z0-9_-]+(@[0-9a-f]+)?|s3://.+|file://.+|[^:]+)$",
                       description="the instrument probe: shipped:NAME or the path of a train-probe probe.pt")

    @field_validator("candidates")
    @classmethod
    def _descending(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(not 0 < t < 1 for t in v):
            raise ValueError(f"candidates must be tau_init values in (0, 1), got {list(v)}")
        return tuple(sorted(set(v), reverse=True))
