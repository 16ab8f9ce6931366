"""The `compare` job (issue 20): the same held-out inputs through every method, per task."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas.diffusion import SamplerConfig, WindowConfig
from schemas.transform import DEFAULT_VOCODER, VOCODER_HELP, VOCODER_PATTERN, InstrumentChoice, Split

Task = Literal["timbre", "midi2real", "enhance"]
TASKS: tuple[Task, ...] = ("timbre", "midi2real", "enhance")


class CompareConfig(InstrumentChoice):
    """What is compared and how it is scored (the job's identity: its hash names the comparison)."""

    tasks: tuple[Task, ...] = TASKS
    model: str = Field(..., description="the target domain's unconditional model (warm init, plain generation)")
    source_models: dict[Task, str] = Field(default_factory=dict, description="DDIB per task: the guide domain's "
                                           "unconditional model, e.g. {'timbre': 'models:/reinstrument-violin@champion'}")
    conditional_models: dict[Task, str] = Field(default_factory=dict, description="the conditional baseline per task "
                                                "(trained on the same corpus's paired segments, `train --cond-domain`)")
    t_init: float | None = Field(None, ge=0, le=1, description="the operating point's tau_init; default: the newest "
                                 "sweep's operating point for this model version under the same output root")
    lam: float | None = Field(None, ge=0, description="with t_init: its lambda (default 1)")
    sampler: SamplerConfig | None = Field(None, description="with t_init: the sampler (default: the operating "
                                          "point's, else the default sampler)")
    neighbours: tuple[float, ...] = Field((-0.05, 0.05), description="tau_init offsets of the operating point's "
                                          "neighbours (each scored like the point itself)")
    timbre_domain: str = Field("violin", description="timbre: the guide instrument (clean clips of this domain)")
    split: Split = Field("test", description="the inputs' split; 'all' (or null): every split, for inputs "
                              "held out by piece (exclude_pieces_of) rather than by split")
    limit: int | None = Field(None, ge=2, description="at most this many inputs per task")
    exclude_pieces_of: tuple[str, ...] = Field((), description="clips datasets whose pieces are never inputs "
                                               "(e.g. the corpus the models trained on)")
    window: WindowConfig = WindowConfig()
    seed: int = 0
    vocoder: str = Field(DEFAULT_VOCODER, pattern=VOCODER_PATTERN, description=VOCODER_HELP)
    vocoder_iters: int = Field(32, ge=1)
    embedding: Literal["musicnn", "musicnn-msd", "musicnn-mtt"] = "musicnn"
    reference_url: str | None = Field(None, description="clips dataset holding the target domain's real clips "
                                      "(default: the inputs)")
    reference_split: str | None = Field("train", description="reference clips' split")
    reference_limit: int | None = Field(None, ge=2)
    jd_threshold: float = Field(0.3, gt=0, lt=1)
    listen: int = Field(2, ge=0, description="inputs per task on the listening page")

    @model_validator(mode="after")
    def _consistent(self) -> "CompareConfig":
        if not self.tasks:
            raise ValueError("no task to compare: expected one or more of timbre, midi2real, enhance")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"a task is listed twice in {self.tasks}")
        stray = (set(self.source_models) | set(self.conditional_models)) - set(self.tasks)
        if stray:
            raise ValueError(f"baseline models given for tasks not compared: {sorted(stray)}; tasks are {self.tasks}")
        if self.t_init is None and (self.lam is not None or self.sampler is not None):
            raise ValueError("lam and sampler set the operating point together with t_init; give t_init too")
        return self


class CompareLayout:
    """A comparison's folder (<out>/compare/<compare_id>/)."""

    COMPARE = "compare"
    TABLE = "comparison.parquet"
    PLOT = "methods.png"
    RESULT = "result.json"
    REPORT = "report"
