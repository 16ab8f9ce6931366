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
from cli.metrics import metrics_app, ratings_app

app = typer.Typer(help="Re-instrument music corpora with diffusion models.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
app.add_typer(data.corpus_app, name="corpus")
app.add_typer(data.config_app, name="config")
app.add_typer(metrics_app, name="metrics")
app.add_typer(ratings_app, name="ratings")
app.add_typer(models.shipped_app, name="shipped")
for fn in (data.ingest, data.augment, data.features, data.inspect, models.train, run.transform, run.sweep,
           run.nightly, run.pull, run.demo):
    app.command()(fn)
app.command("mel2audio")(data.mel2audio)
app.command("warm-probe")(models.warm_probe)
app.command("train-probe")(models.train_probe)
app.command("train-vocoder")(models.train_vocoder)
app.command("train-autoencoder")(models.train_autoencoder)
app.command("serve")(run.serve)
app.command("compare")(compare.compare)


PLAIN_HELP_WIDTH = 10_000


def tidy_help(command, *, plain: bool) -> None:
    """Help as a user reads it: a flag shows no `<bool>` type (it takes no value), and off a
    terminal (a pipe, a file, a CI log) help is click's plain text, wrapped but never cut, where
    Rich's 80-column boxes would cut model URIs short."""
    for p in command.params:
        if getattr(p, "is_flag", False):
            p.metavar = ""
        if getattr(p, "hidden", False):  # an old spelling (cli/common.old_argument): not in the usage line either
            p.get_usage_pieces = lambda ctx: []
    if plain:  # one line per paragraph: wrapping at 80 columns would split a URI at its hyphens
        command.rich_markup_mode = None
        command.context_settings.update(terminal_width=PLAIN_HELP_WIDTH, max_content_width=PLAIN_HELP_WIDTH)
    help_option = command.get_help_option

    def get_help_option(ctx, _made=help_option):  # --help is made per context, outside params
        option = _made(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub, plain=plain)


def main() -> None:
    """Exit status and error lines as cli/common.py states them, for every command."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from infra.allocator import keep_freed_memory
    from infra.secrets import redact_log_records

    keep_freed_memory()  # what this process computes itself (metrics, in-process stages) reuses freed pages
    redact_log_records()  # no URL's password in any log line this process writes (Prefect's included)
    try:
        command = typer.main.get_command(app)
        tidy_help(command, plain=not sys.stdout.isatty())
        status = command.main(standalone_mode=False)
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
