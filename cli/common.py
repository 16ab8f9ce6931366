"""What every command shares: one config loader (--config JSON, then the options given), running
a job plainly or as its Prefect flow, printing tables, and one-line errors.

Exit status, every command: 0 done; 2 a usage or config mistake (an unknown option, a missing
argument, a config value out of range, credentials inside a URL); 1 anything else the user can
fix (a missing path, an unknown model, an unreachable endpoint, a bad input); 130 interrupted. A
mistake prints exactly one `error:` line on stderr and no traceback, with or without Prefect
(REINSTRUMENT_DEBUG=1 re-raises it); Prefect's UI and MLflow keep the full traceback."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
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


def _merge(base: dict, over: dict, written: bool = False) -> dict:
    """`over` onto `base`, nested dicts key by key; None in `over` means 'not given'. An empty
    dict an option builds means 'not given' too, but one `written` in a config file is a value:
    `"performance": {}` asks for every default of that section (it was once dropped silently)."""
    out = dict(base)
    for k, v in over.items():
        if v is None or v == [] or v == ():
            continue
        if isinstance(v, dict):
            nested = _merge(out.get(k) or {}, v, written)
            if nested or k in out or written:
                out[k] = nested
        else:
            out[k] = v
    return out


def load_config(cls: type[C], path: Path | None, base: dict | None = None, **options) -> C:
    """defaults < `base` (e.g. a preset) < the --config file < the options given. Exit 2 with one
    line naming each wrong key and what was expected when the result is not a valid config."""
    from tasks.errors import describe

    data = _merge(base or {}, json.loads(path.read_text()) if path else {}, written=True)
    try:
        return cls.model_validate(_merge(data, options))
    except (ValidationError, ValueError) as e:
        print_error(describe(e))
        raise typer.Exit(USAGE) from None


USAGE, RUNTIME = 2, 1


def _strings(obj) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in _strings(v)]
    return []


def refuse_credentials_in(*args, **kwargs) -> None:
    """A job's arguments never carry user:password@ in a URL: they would be stored with the run
    (Prefect's flow parameters and logs, MLflow params, run records). Refused before anything runs."""
    from infra.secrets import refuse_userinfo

    for value in _strings(list(args) + list(kwargs.values())):
        try:
            refuse_userinfo(value, "argument")
        except ValueError as e:
            print_error(f"ValueError: {e}")
            raise typer.Exit(USAGE) from None


class QuietFailures(logging.Filter):
    """On Prefect's console handler, under a command: the failure is printed once, as the `error:`
    line, not as Prefect's tracebacks and failed-state lines (they still reach the API, so the UI
    shows them whole); a temporary API's "View at" link dies with the command, so it is not shown."""

    def __init__(self, temporary_api: bool):
        super().__init__()
        self.temporary_api = temporary_api

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("prefect") and record.levelno >= logging.ERROR:
            return False
        msg = record.getMessage()
        if msg.startswith("Finished in state") and ("Failed" in msg or "Crashed" in msg):
            return False
        return not (self.temporary_api and msg.startswith("View at "))


def _console_handlers() -> list[logging.Handler]:
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    return list({id(h): h for lg in loggers for h in lg.handlers if isinstance(h, PrefectConsoleHandler)}.values())


def run(flow_obj, job, use_prefect: bool, /, *args, **kwargs):
    """The job under its Prefect flow (with a Prefect API: PREFECT_API_URL's, or a temporary one on
    127.0.0.1 that dies with this process), or the job as a plain function, no Prefect at all."""
    refuse_credentials_in(*args, **kwargs)
    if not use_prefect:
        return job(*args, **kwargs)
    import os

    from infra.prefect_api import prefect_api

    quiet = QuietFailures(temporary_api=not os.environ.get("PREFECT_API_URL"))
    handlers = _console_handlers()
    for h in handlers:
        h.addFilter(quiet)
    try:
        with prefect_api():
            return flow_obj(*args, **kwargs)
    finally:
        for h in handlers:
            h.removeFilter(quiet)


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


def print_error(text: str) -> None:
    """The one `error:` line: the text as it is (never read as rich markup: a `[` in a path or an
    S3 URL is text), no URL's password."""
    from infra.secrets import redact

    console.print(f"[red]error:[/red] {escape(redact(' '.join(text.split())))}", soft_wrap=True, highlight=False)


def usage_error(text: str) -> None:
    """A usage mistake the parser cannot see (options that do not go together): one line, exit 2."""
    print_error(text)
    raise typer.Exit(USAGE)


def exit_status(e: BaseException) -> int:
    """2 for a config that does not validate, 1 for every other mistake."""
    return USAGE if isinstance(e, ValidationError) else RUNTIME


def fail(e: BaseException, status: int | None = None) -> None:
    """One line: what was wrong and what was expected (the exception's own message)."""
    from tasks.errors import describe

    print_error(f"{describe(e)} (REINSTRUMENT_DEBUG=1 shows the traceback)")
    raise typer.Exit(status or exit_status(e))


TargetOpt = typer.Option(None, help="The instrument to turn into, for a model that learned several "
                                    "(e.g. cello with shipped:instruments-latent).")
GuidanceOpt = typer.Option(None, help="Classifier-free guidance weight of a model that learned several "
                                      "instruments (default 1: the target's model alone).")
DecoderOpt = typer.Option(None, help="A latent model: decode with this autoencoder (a decoder fine-tuned with the "
                                     "model's encoder frozen, e.g. models:/reinstrument-autoencoder/3) instead of its own.")


# One vocabulary (docs/commands.md): an old spelling stays a hidden option whose help starts with
# DEPRECATED and names the new one; tests/unit/test_cli_vocabulary.py holds every command to it.
DEPRECATED = "Deprecated spelling of"


def old_spelling(old: str, new: str) -> typer.models.OptionInfo:
    """A hidden option for an old spelling, e.g. old_spelling('--dest', '--out')."""
    return typer.Option(None, old, hidden=True, help=f"{DEPRECATED} {new}.")


def old_argument(old: str, new: str) -> typer.models.ArgumentInfo:
    """A hidden trailing positional argument that used to be what `new` is now."""
    return typer.Argument(None, metavar=old, hidden=True, help=f"{DEPRECATED} {new}.")


def moved(old: str, new: str, old_value, value):
    """The value the user gave under `old` moved to `new`, with a one-line notice on stderr; both
    given (and different) is a usage mistake."""
    if old_value is None or old_value is False:
        return value
    if value is not None and value != old_value:
        usage_error(f"{old} is the old spelling of {new}; give one of them (got {old_value!r} and {value!r})")
    console.print(f"notice: {old} is deprecated; use {new}")
    return old_value


def required(name: str, value):
    if value is None:
        usage_error(f"missing option {name} (see --help)")
    return value


def t_init_option(value: str | None) -> tuple[float | None, dict | None]:
    """--t-init: a number in [0, 1], or auto (per clip, tasks/auto_t_init.py) -> (t_init, auto config)."""
    if value is None:
        return None, None
    if value.strip().lower() == "auto":
        from schemas.probe import AutoStart

        return None, AutoStart().model_dump(mode="json")
    try:
        return float(value), None
    except ValueError:
        usage_error(f"--t-init: expected a number in [0, 1] or 'auto', got {value!r}")
        raise  # usage_error exits
