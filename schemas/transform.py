"""Transformation run configs. `TransformConfig` is the identity of every output (its hash is
part of each output's key); `TransformLogistics` is how the run executes (never hashed)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from schemas.configs import StrictConfig
from schemas.probe import AutoStart
from schemas.diffusion import DDIB_SAMPLER, RECOMMENDED_SAMPLER, SamplerConfig, WarmStartConfig, WindowConfig

def check_ddib_sampler(sampler: SamplerConfig) -> None:
    """DDIB integrates the probability-flow ODE up with the source model and down with the target
    (both deterministic, so the code at sigma_N is the guide's): only Euler or Heun, no churn."""
    if sampler.name not in ("euler", "heun") or sampler.S_churn > 0:
        raise ValueError(f"ddib runs the deterministic ODE both ways with 'heun' or 'euler' and churn 0; "
                         f"got sampler {sampler.name!r} with churn {sampler.S_churn:g}")


def default_sampler(data: object) -> object:
    """A config that names no sampler gets the recommended one for its method; one that sets only
    some fields (`--steps 20`) gets them over it, unless it names another solver, which then starts
    from its own defaults (`--sampler heun`: Heun on the N grid, as before issue 22). A `before`
    validator: the filled-in sampler is part of the config's hash, so output keys say it."""
    if not isinstance(data, dict):
        return data
    default = DDIB_SAMPLER if data.get("method") == "ddib" else RECOMMENDED_SAMPLER
    given = data.get("sampler")
    if isinstance(given, SamplerConfig):
        return data
    given = dict(given or {})  # an explicit null stays: "solver_steps": null is the N grid
    if "name" not in given and (given.get("S_churn") or given.get("churn")):
        given["name"] = "heun"  # churn is Heun's alone (EDM Algorithm 2): a config with churn means Heun
    if given.get("name", default.name) != default.name:
        return {**data, "sampler": given}
    return {**data, "sampler": default.model_dump() | given}


# How outputs are decoded to audio: `auto` is the registered champion vocoder, else the shipped one
# (weights/vocoder), else Griffin-Lim (with a notice); the choice is pinned per run (jobs/transform).
DEFAULT_VOCODER = "auto"
VOCODER_PATTERN = r"^(auto|griffin-lim|shipped:vocoder(@[0-9a-f]+)?|models:/.+|runs:/.+)$"
VOCODER_HELP = ("auto (the champion vocoder, else the shipped one, else Griffin-Lim) | griffin-lim | shipped:vocoder | "
                "a vocoder model URI, e.g. models:/reinstrument-vocoder@champion")

# The guide of each task: which clips of a corpus are transformed.
TASK_ROLES = {"timbre": "clean", "midi2real": "midi_guide", "enhance": "degraded"}


CHOICE_DEFAULTS = (("target", None), ("source", None), ("guidance", 1.0), ("decoder", None), ("auto", None))
DECODER_PATTERN = r"^(own|shipped:[A-Za-z0-9_-]+(@[0-9a-f]+)?|models:/.+|runs:/.+)$"


class InstrumentChoice(StrictConfig):
    """Which instrument a model that learned several turns guides into (shared by transform,
    sweep, compare and nightly)."""

    target: str | None = Field(None, description="the instrument to turn into, for a model that learned several "
                               "(e.g. cello); a one-instrument model needs none")
    source: str | None = Field(None, description="ddib with a model that learned several instruments: the guide's "
                               "instrument (the bridge's source label)")
    guidance: float = Field(1.0, ge=0, description="classifier-free guidance weight w of a labelled model "
                            "(1: the label's model alone; > 1 pushes further toward the target)")
    # (shared here because transform, sweep and compare all decode) a decoder fine-tuned with the
    # encoder frozen decodes the same latents; checked bit for bit against the model's encoder
    decoder: str | None = Field(None, pattern=DECODER_PATTERN,
                                description="a latent model: decode its latents with this autoencoder instead of "
                                "its own; it must keep the model's encoder bit for bit (a decoder fine-tune). "
                                "Default: the decoder the repository ships for that encoder, else its own; 'own': its own")
    # `--t-init auto` (tasks/auto_t_init.py): tau_init chosen per clip; warm.t_init is then unused
    auto: AutoStart | None = Field(None, description="warm init: choose tau_init per clip with the instrument probe "
                                   "(--t-init auto) instead of one tau_init for every clip")

    def config_hash(self) -> str:
        """As StrictConfig's, without `auto` while it is unset (configs made before it keep their hash)."""
        from schemas.configs import config_hash

        d = self.model_dump(mode="json")
        if d["auto"] is None:
            del d["auto"]
        return config_hash(d)

    def identity(self) -> dict:
        """The config as it enters run, sweep and comparison IDs: these fields left out while at
        their defaults, as before they existed, so runs made then are found again ('own' decoder:
        what every run did before decoders could be chosen)."""
        d = self._without_defaults(*CHOICE_DEFAULTS)
        if d.get("decoder") == "own":
            del d["decoder"]
        return d

    def _without_defaults(self, *fields: tuple[str, object]) -> dict:
        d = self.model_dump(mode="json")
        for name, default in fields:
            if d[name] == default:
                del d[name]
        return d


class TransformConfig(InstrumentChoice):
    task: Literal["timbre", "midi2real", "enhance"] = "timbre"
    method: Literal["warm_init", "ddib", "conditional"] = "warm_init"
    model: str = Field(..., description="target model: models:/<name>@<alias>, models:/<name>/<version>, runs:/...")
    source_model: str | None = Field(None, description="ddib only: the guide domain's unconditional model")
    warm: WarmStartConfig = WarmStartConfig(t_init=0.5, lam=1.0)
    sampler: SamplerConfig = Field(RECOMMENDED_SAMPLER, description="default: RECOMMENDED_SAMPLER (ddib: Heun, N 35)")
    window: WindowConfig = WindowConfig()
    seed: int = Field(0, description="run seed; every clip's noise derives from (seed, clip ID)")

    _default_sampler = model_validator(mode="before")(default_sampler)
    vocoder: str = Field(DEFAULT_VOCODER, pattern=VOCODER_PATTERN, description=VOCODER_HELP)
    vocoder_iters: int = Field(32, ge=1)

    def config_hash(self) -> str:
        """Part of every output's key, without `decoder`: the key names the decoder the run pinned
        (tasks/transform.output_key), whichever way it was asked for, as before decoders could be chosen."""
        from schemas.configs import config_hash

        d = self.model_dump(mode="json")
        del d["decoder"]
        if d["auto"] is None:  # configs made before auto existed keep their hash
            del d["auto"]
        return config_hash(d)

    def auto_rule(self) -> str | None:
        """How `auto` chooses tau_init: its rule, else noise (the input's degradation) for enhance and
        the instrument probe otherwise; None without auto."""
        if self.auto is None:
            return None
        return self.auto.rule or ("noise" if self.task == "enhance" else "probe")

    @model_validator(mode="after")
    def _method_needs(self) -> "TransformConfig":
        if self.method == "ddib" and not self.source_model:
            raise ValueError("method 'ddib' needs source_model (the guide domain's unconditional model)")
        if self.method != "ddib" and self.source_model:
            raise ValueError(f"source_model is only used by method 'ddib', not {self.method!r}")
        if self.method == "ddib" and self.warm.t_init == 1:
            raise ValueError("ddib with t_init=1 has no bridge to run (sigma_N = 0); use t_init < 1")
        if self.method == "ddib":
            check_ddib_sampler(self.sampler)
        if self.auto is not None and self.method != "warm_init":
            raise ValueError(f"t_init 'auto' chooses a warm start per clip; method {self.method!r} has none (use warm_init)")
        return self


def _all_splits(v):
    """'all' means every split (null): a CLI option and a --config file cannot say null."""
    return None if v == "all" else v


# one spelling for every command that selects inputs by split (transform, sweep, compare, nightly)
Split = Annotated[str | None, BeforeValidator(_all_splits)]


class InputSelection(StrictConfig):
    """Which clips of the inputs are transformed (clips datasets; a folder is ingested whole)."""

    domain: str | None = Field(None, description="guide domain, e.g. 'violin'")
    role: str | None = Field(None, description="default: the task's guide role (clean | midi_guide | degraded)")
    split: Split = Field(None, description="train | valid | test; all (or null): every split")
    limit: int | None = Field(None, ge=1, description="at most this many clips (sorted by clip ID)")
    commits: tuple[str, ...] | None = Field(None, description="only the shards of these commits of the clips "
                                                               "dataset (the nightly job's batch of new arrivals)")
    exclude_pieces_of: tuple[str, ...] = Field((), description="clips datasets whose pieces are never selected: "
                                               "held-out inputs by construction (e.g. the corpus a model trained on)")

    def identity(self) -> dict:
        """The selection as it enters run and sweep IDs (no exclusion: as before the field existed,
        so runs made then are found again)."""
        d = self.model_dump()
        if not d["exclude_pieces_of"]:
            del d["exclude_pieces_of"]
        return d


class WholeOutputs(StrictConfig):
    """Whole-recording outputs: one file per source recording (a file of an ingested folder or
    prefix), named after it, stitched from its clip outputs (tasks/recordings.py)."""

    format: Literal["flac", "wav"] = Field("flac", description="flac | wav (16-bit, mono)")
    sample_rate: Literal["model", "source"] = Field(
        "model", description="model: the model's rate (16 kHz for the shipped models); source: resampled to the "
        "source's rate (soxr HQ) - it adds no bandwidth above the model's Nyquist frequency")
    crossfade_s: float = Field(1.0, gt=0, le=10, description="longest cross-fade between consecutive clips "
                                                               "(within their overlap)")

    def identity(self) -> dict:
        """What enters a run's ID: nothing at the defaults (runs made before keep their IDs)."""
        return {} if self == WholeOutputs() else self.model_dump(mode="json")


class TransformLogistics(StrictConfig):
    num_actors: int = Field(2, ge=0, description="Ray actors; 0 transforms in this process")
    use_gpu: bool = Field(False, description="one GPU per actor, bf16 autocast")
    batch_windows: int = Field(8, ge=1, description="windows per model call; calls are padded to this "
                                                     "fixed shape, so results never depend on batch-mates")
    clips_per_task: int = Field(4, ge=1, description="clips per actor call (and per committed shard)")
    out_url: str = Field(..., description="root; outputs go to <out_url>/runs/<run_id>/")
    run_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
                               description="a plain name, [A-Za-z0-9_.-] (it becomes a folder under runs/); "
                                           "default: a hash of inputs, selection, model version and config, "
                                                 "so a re-run of the same job resumes it")
    experiment: str = "reinstrument-transform"
    audio_examples: int = Field(3, ge=0, description="outputs logged to MLflow as audio artifacts")
    parent_run_id: str | None = Field(None, description="MLflow parent run (a sweep); this run becomes its child")
    operating_point: str = Field("given", description="where t_init and lam came from (given | a sweep's ID | "
                                 "default), recorded with every whole recording")
