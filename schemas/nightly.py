"""The nightly job's config: which prefix to watch, which targets to turn each arrival into, and
how. The same record is the `reinstrument-nightly` deployment's parameters (prefect.yaml), the
`nightly` command's --config file and `reinstrument config show nightly`."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas.configs import StrictConfig
from schemas.transform import DEFAULT_VOCODER, VOCODER_HELP, VOCODER_PATTERN


class NightlyTarget(StrictConfig):
    """One target of the night. With no `t_init` the model's newest sweep decides (its operating
    point for re-instrumentation, applied whole), else the default operating point."""

    model: str = Field(..., min_length=1, description="model URI, e.g. models:/reinstrument-flute@champion or "
                                                      "shipped:instruments-latent")
    target: str | None = Field(None, min_length=1, description="the instrument, for a model that learned several")
    t_init: float | Literal["auto"] | None = Field(None, description="tau_init (0: plain generation), or auto: "
                                                   "chosen per clip by the instrument probe with the operating point's "
                                                   "lambda and sampler; default the operating point")
    lam: float | None = Field(None, ge=0.0, description="lambda with a given t_init (default 1)")
    vocoder: str | None = Field(None, pattern=VOCODER_PATTERN, description="this target's decoder (default the "
                                                                           "night's `vocoder`)")

    @model_validator(mode="after")
    def _check(self) -> "NightlyTarget":
        if isinstance(self.t_init, float) and not 0 <= self.t_init <= 1:
            raise ValueError(f"t_init={self.t_init:g}: expected a tau_init in [0, 1] or 'auto'")
        if self.lam is not None and self.t_init in (None, "auto"):
            raise ValueError(f"lam={self.lam:g} without t_init: a target takes its operating point whole (tau_init "
                             "and lambda) or names t_init, with lam if not 1")
        return self

    @classmethod
    def parse(cls, spec: str) -> "NightlyTarget":
        """'URI' or 'URI=instrument' (the command line's spelling)."""
        uri, sep, instrument = spec.rpartition("=")
        return cls(model=uri, target=instrument) if sep and uri else cls(model=spec)


class NightlyConfig(StrictConfig):
    inputs: str = Field(..., min_length=1, description="prefix to watch (folder or s3://); what arrived since the "
                                                       "last successful night is transformed")
    targets: tuple[NightlyTarget, ...] = Field(..., min_length=1)
    out: str | None = Field(None, description="root; outputs under OUT/nightly/<date>/ (default DATA_ROOT)")
    vocoder: str = Field(DEFAULT_VOCODER, pattern=VOCODER_PATTERN, description=VOCODER_HELP)
    seed: int = Field(0, description="run seed; each clip's noise derives from (seed, clip ID)")
    steps: int | None = Field(None, ge=1, description="N reverse steps (default: the operating point's sampler)")
    actors: int = Field(2, ge=0, description="Ray actors (0: transform in this process)")
    clips_per_task: int = Field(4, ge=1, description="clips per actor call and per committed shard (what a crash "
                                                     "can lose)")

    @model_validator(mode="after")
    def _resolved(self) -> "NightlyConfig":
        # prefect.yaml's parameters read environment variables when `prefect deploy` runs; one that
        # was not exported then stays a literal placeholder, which no storage URL can be
        for name in ("inputs", "out"):
            value = getattr(self, name)
            if value and "{{" in value:
                raise ValueError(f"{name}={value!r} is a prefect.yaml placeholder nobody filled in: export the "
                                 "variable it names and run `prefect deploy` again, or pass -p " + name + "=URL")
        return self
