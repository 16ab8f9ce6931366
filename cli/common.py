"""What every command shares: one config loader (--config JSON, then the options given), running
a job plainly or as its Prefect flow, printing tables, and one-line errors."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

# soft_wrap: no newline inside a printed line. Off a terminal rich assumes 80 columns, and a path or
# a command wrapped in a log (make demo | tee, CI, Prefect) could not be copied back whole.
console = Console(stderr=True, soft_wrap=True)
C = TypeVar("C", bound=BaseModel)
PrefectOpt = typer.Option(True, "--prefect/--no-prefect",
                          help="Run as a Prefect flow (history, logs; starts a temporary API if "
                               "PREFECT_API_URL is unset) or call the job directly.")
ConfigOpt = typer.Option(None, "--config", help="Config JSON (`reinstrument config show KIND`); options override it.")
# EDM's stochastic sampler (Karras et al. 2022, Algorithm 2), under EDM's names.
SChurnOpt = typer.Option(None, "--S_churn", "--s-churn", help="Heun's S_churn (EDM Algorithm 2; 0: the deterministic ODE).")
STminOpt = typer.Option(None, "--S_tmin", "--s-tmin", help="S_tmin: churn only at sigma >= this.")
STmaxOpt = typer.Option(None, "--S_tmax", "--s-tmax", help="S_tmax: churn only at sigma <= this.")
SNoiseOpt = typer.Option(None, "--S_noise", "--s-noise", help="S_noise: scale of the churn noise.")


def _merge(base: dict, over: dict) -> dict:
    """`over` onto `base`, nested dicts key by key; None in `over` means 'not given'."""
    out = dict(base)
    for k, v in over.items():
        if v is None or v == [] or v == ():
            continue
        if isinstance(v, dict):
            nested = _merge(out.get(k) or {}, v)
            if nested or k in out:
                out[k] = nested
        else:
            out[k] = v
    return out


def load_config(cls: type[C], path: Path | None, base: dict | None = None, **options) -> C:
    """defaults < `base` (e.g. a preset) < the --config file < the options given. Exit 2 with one
    line naming each wrong key and what was expected when the result is not a valid config."""
    from tasks.errors import describe

    data = _merge(base or {}, json.loads(path.read_text()) if path else {})
    try:
        return cls.model_validate(_merge(data, options))
    except (ValidationError, ValueError) as e:
        console.print(f"[red]error:[/red] {describe(e)}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None


def run(flow_obj, job, use_prefect: bool, /, *args, **kwargs):
    """The job under its Prefect flow (with a Prefect API: PREFECT_API_URL's, or a temporary one on
    127.0.0.1 that dies with this process), or the job as a plain function, no Prefect at all."""
    if not use_prefect:
        return job(*args, **kwargs)
    from infra.prefect_api import prefect_api

    with prefect_api():
        return flow_obj(*args, **kwargs)


def print_rows(rows: list[dict], title: str) -> None:
    if not rows:
        console.print(f"{title}: (empty)")
        return
    t = Table(title=title)
    for c in rows[0]:
        t.add_column(str(c))
    for r in rows:
        t.add_row(*[f"{v:.2f}" if isinstance(v, float) else str(v) for v in r.values()])
    out = Console()
    if not out.is_terminal:  # a log has no width: give the table its own, not rich's 80 (squeezed cells)
        t.min_width = len(title)  # and its title one line
        out = Console(width=max(out.width, Console(width=10_000).measure(t).maximum))
    out.print(t)


def root() -> str:
    from infra.settings import get_settings

    return get_settings().data_root


def fail(e: BaseException) -> None:
    """One line: what was wrong and what was expected (the exception's own message)."""
    from tasks.errors import describe

    console.print(f"[red]error:[/red] {describe(e)} (REINSTRUMENT_DEBUG=1 shows the traceback)",
                  soft_wrap=True, highlight=False)
    raise typer.Exit(1)
