"""Which tau_init and lambda a job runs at when none is given: the newest sweep's operating point
for that model version (and instrument), else the documented default. One rule for `transform`,
`nightly` and `compare`."""
from __future__ import annotations

from infra.storage import Storage
from schemas.diffusion import SamplerConfig, WarmStartConfig
from schemas.records import OperatingPoint, Recommendation
from schemas.records import SweepLayout as L

# The knee measured for flute and trumpet, the instruments the model of six renders best (its first
# version, held-out O'Neill tunes, docs/general-models.md; cello and clarinet sit at 0.8): a model
# with no sweep of its own starts here. `reinstrument sweep` records a better one per model version.
DEFAULT_WARM = WarmStartConfig(t_init=0.6, lam=0.0)
DEFAULT_ORIGIN = "the default (τ 0.6, λ 0: the knee measured for flute on held-out tunes; no sweep recorded for this model)"


def newest_recommendation(root: Storage, model_version: str, task: str | None = None,
                          target: str | None = None) -> Recommendation | None:
    """The newest sweep under `root` of this model version that recorded an operating point. With
    `task`, only sweeps of that task count (a sweep that did not record its task counts for any).
    A model of several instruments has one point per `target` instrument."""
    best = None
    for rel in root.find(L.SWEEPS):
        if rel.endswith(L.RECOMMENDATION):
            rec = Recommendation.model_validate_json(root.read_bytes(rel))
            if (task is not None and rec.task not in (None, task)) or rec.target != target:
                continue
            if rec.model_version == model_version and rec.operating_point is not None:
                if best is None or rec.finished_at > best.finished_at:
                    best = rec
    return best


def newest_operating_point(root: Storage, model_version: str, task: str | None = None,
                           target: str | None = None) -> OperatingPoint | None:
    """The newest sweep's operating point (tau_init or sigma, lambda and sampler settings), else None."""
    rec = newest_recommendation(root, model_version, task, target)
    return None if rec is None else rec.operating_point


def operating_point_for(root: Storage, model_version: str, task: str | None = None, target: str | None = None
                        ) -> tuple[WarmStartConfig, SamplerConfig | None, str]:
    """(warm start, the sweep's sampler or None, where they came from) for a job given no tau_init."""
    rec = newest_recommendation(root, model_version, task, target)
    if rec is None or rec.operating_point is None:
        return DEFAULT_WARM, None, DEFAULT_ORIGIN
    op = rec.operating_point
    return op.warm(), op.sampler, f"sweep {rec.sweep_id} of {rec.finished_at[:19]} (its {op.rule})"


def for_model(model: str, out_url: str, task: str = "timbre", target: str | None = None
              ) -> tuple[WarmStartConfig, SamplerConfig | None, str]:
    """`operating_point_for` the version MODEL resolves to now, among the sweeps under OUT_URL."""
    from infra import tracking

    _, version = tracking.resolve_model(model)
    return operating_point_for(Storage(Storage(out_url).absolute_url()), version, task, target)
