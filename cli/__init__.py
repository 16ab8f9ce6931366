"""The `reinstrument` command line: each command parses its options, loads one config (--config
JSON, then the options given), calls one job of jobs/ (or its Prefect flow) and prints. Every
command has --help; `reinstrument config show KIND` prints a config's defaults."""
from __future__ import annotations

import os
import sys

import typer
# typer vendors its own click (0.29+): its parsing errors are these classes, not the click package's
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from cli import compare, data, models, run
from cli.common import USAGE, console, fail, print_error
from cli.metrics import metrics_app

app = typer.Typer(help="Re-instrument music corpora with diffusion models.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
app.add_typer(data.corpus_app, name="corpus")
app.add_typer(data.config_app, name="config")
app.add_typer(metrics_app, name="metrics")
app.add_typer(models.shipped_app, name="shipped")
for fn in (data.ingest, data.augment, data.features, data.inspect, models.train, run.transform, run.sweep,
           run.nightly, run.pull, run.demo):
    app.command()(fn)
app.command("mel2audio")(data.mel2audio)
app.command("warm-probe")(models.warm_probe)
app.command("train-vocoder")(models.train_vocoder)
app.command("train-autoencoder")(models.train_autoencoder)
app.command("serve")(run.serve)
app.command("compare")(compare.compare)


def main() -> None:
    """Exit status and error lines as cli/common.py states them, for every command."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from infra.allocator import keep_freed_memory
    from infra.secrets import redact_log_records

    keep_freed_memory()  # what this process computes itself (metrics, in-process stages) reuses freed pages
    redact_log_records()  # no URL's password in any log line this process writes (Prefect's included)
    try:
        status = typer.main.get_command(app).main(standalone_mode=False)
    except NoArgsIsHelpError as e:
        e.show()
        status = e.exit_code
    except UsageError as e:  # a missing argument, an unknown option, a bad option value
        where = f" ({e.ctx.command_path} --help)" if e.ctx else ""
        print_error(f"{e.format_message()}{where}")
        status = USAGE
    except ClickException as e:  # an unreadable --config file, say
        print_error(e.format_message())
        status = e.exit_code
    except (KeyboardInterrupt, typer.Abort):
        console.print("interrupted")
        status = 130
    except Exception as e:  # noqa: BLE001 - sorted into user errors (one line) and bugs (re-raised)
        from tasks.errors import user_error

        err = user_error(e)
        if err is None or os.environ.get("REINSTRUMENT_DEBUG"):
            raise
        try:
            fail(err)
        except typer.Exit as ex:
            status = ex.exit_code
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
