"""The `sweep-t-init` job: a grid of tau_init (or sigma_start) x lambda over one input set."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from schemas.diffusion import RECOMMENDED_SAMPLER, SamplerConfig, WarmStartConfig, WindowConfig
from schemas.transform import (CHOICE_DEFAULTS, DEFAULT_VOCODER, VOCODER_HELP, VOCODER_PATTERN, InstrumentChoice, check_ddib_sampler,
                               default_sampler)

# Dense where the trade-off happens: with sigma_max 80, rho 7 and 35 steps, tau_init 0.35-0.65
# spans sigma 8.4-0.4, where standardised log-mels change domain (docs/design.md, "Where the trade-off happens").
DEFAULT_T_INITS = (0.0, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 1.0)


class SweepConfig(InstrumentChoice):
    task: Literal["timbre", "midi2real", "enhance"] = "timbre"
    method: Literal["warm_init", "ddib"] = "warm_init"
    model: str = Field(..., description="target model URI, e.g. models:/reinstrument-flute@champion")
    source_model: str | None = None
    t_inits: tuple[float, ...] | None = DEFAULT_T_INITS
    sigma_starts: tuple[float, ...] | None = Field(None, description="a sigma grid instead of t_inits")
    lams: tuple[float, ...] = (0.0, 1.0)
    sampler: SamplerConfig = Field(RECOMMENDED_SAMPLER, description="default: RECOMMENDED_SAMPLER (ddib: Heun, N 35)")

    @field_validator("method", mode="before")
    @classmethod
    def _sweepable(cls, method: object) -> object:
        if method == "conditional":  # said plainly: the Literal alone would only list the others
            raise ValueError("the conditional baseline has no tau_init to sweep (it generates from noise, conditioned "
                             "on the guide); sweep warm_init or ddib, and score the baseline with `reinstrument compare`")
        return method
    _default_sampler = model_validator(mode="before")(default_sampler)
    window: WindowConfig = WindowConfig()
    seed: int = 0
    vocoder_iters: int = Field(32, ge=1)
    embedding: Literal["musicnn", "musicnn-msd", "musicnn-mtt"] = "musicnn"
    reference_url: str | None = Field(None, description="clips dataset of the target domain (default: the inputs)")
    reference_domain: str | None = Field(None, description="default: the model's domain")
    reference_split: str | None = Field("train", description="reference clips' split (held apart from the inputs)")
    reference_limit: int | None = Field(None, ge=2)
    vocoder: str = Field(DEFAULT_VOCODER, pattern=VOCODER_PATTERN, description=VOCODER_HELP)
    vocoded_reference: bool = Field(False, description="FAD against the reference passed through the same mel + "
                                                       "vocoder (tau_init=1) instead of the real clips: scores the "
                                                       "model without the decoder (a diagnostic, not realism)")
    vocoded_diagnostic: bool = Field(False, description="also report FAD against the vocoded reference "
                                                        "(metric fad_vocoded) next to FAD against the real clips")
    jd_threshold: float = Field(0.3, gt=0, lt=1)
    anchors: bool = Field(True, description="also score plain generation (tau_init 0, lambda 1) and the true target "
                          "(where the inputs are a corpus that has it): what the grid's FAD and JD are read against")

    def identity(self) -> dict:
        """As InstrumentChoice.identity, `anchors` left out too while on (as before it existed)."""
        return self._without_defaults(*CHOICE_DEFAULTS, ("anchors", True))

    @model_validator(mode="after")
    def _grid(self) -> "SweepConfig":
        if (self.t_inits is None) == (self.sigma_starts is None):
            raise ValueError("give exactly one of t_inits and sigma_starts")
        if not (self.t_inits or self.sigma_starts) or not self.lams:
            raise ValueError("the grid is empty: need at least one t_init/sigma_start and one lambda")
        if self.method == "ddib":
            check_ddib_sampler(self.sampler)
        if not self.grid():
            raise ValueError("the grid is empty for ddib: tau_init 1 / sigma 0 has no bridge; "
                             "expected at least one tau_init < 1 or sigma > 0")
        return self

    def grid(self) -> list[WarmStartConfig]:
        """Every grid point, validated (a bad tau_init, sigma or lambda fails here, before any work)."""
        starts = ([{"t_init": t} for t in self.t_inits] if self.t_inits
                  else [{"sigma_start": s} for s in self.sigma_starts])
        if self.method == "ddib":  # a bridge needs somewhere to go: tau_init=1 / sigma 0 has no DDIB counterpart
            starts = [s for s in starts if s.get("t_init") != 1.0 and s.get("sigma_start") != 0]
        return [WarmStartConfig(**s, lam=lam) for lam in self.lams for s in starts]
