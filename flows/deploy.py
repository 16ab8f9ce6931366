"""The deployments users run, served from one long-running process (`reinstrument serve`):

  sweep-t-init/default          triggered:  prefect deployment run 'sweep-t-init/default' \
                                              -p inputs=s3://bucket/corpus/clips -p model=models:/reinstrument-flute@champion
  compare-methods/default       triggered:  prefect deployment run 'compare-methods/default' \
                                              -p inputs=s3://bucket/heldout/clips -p model=models:/reinstrument-flute@champion
  reinstrument-nightly/default  on a cron schedule (default 02:00 UTC), or triggered the same way

The serve process polls the Prefect API (PREFECT_API_URL) and runs each flow run in a subprocess."""
from __future__ import annotations

from prefect import serve

from flows.pipeline import compare_methods, nightly_flow, sweep_t_init
from schemas.nightly import NightlyTarget

NIGHTLY_CRON = "0 2 * * *"


def deployments(*, nightly_inputs: str | None = None, nightly_targets: list[NightlyTarget] | None = None,
                out: str | None = None, cron: str | None = NIGHTLY_CRON, actors: int = 2) -> list:
    targets = [t.model_dump(exclude_none=True) for t in nightly_targets] if nightly_targets else None
    nightly_params = {k: v for k, v in {"inputs": nightly_inputs, "targets": targets, "out": out,
                                        "actors": actors}.items() if v is not None}
    sweep_params = {k: v for k, v in {"out": out, "actors": actors}.items() if v is not None}
    return [
        sweep_t_init.to_deployment(name="default", parameters=sweep_params,
                                   description="tau_init sweep: FAD/JD per grid point, plots, recommendation, report"),
        compare_methods.to_deployment(name="default", parameters=sweep_params,
                                      description="every method, every task, on held-out inputs: tables, plot, page"),
        nightly_flow.to_deployment(name="default", parameters=nightly_params, cron=cron if nightly_inputs else None,
                                   description="transform new arrivals with each target's champion"),
    ]


def serve_all(**kwargs) -> None:
    serve(*deployments(**kwargs))
