"""The `reinstrument` command line: each command parses its options, loads one config (--config
JSON, then the options given), calls one job of jobs/ (or its Prefect flow) and prints. Every
command has --help; `reinstrument config show KIND` prints a config's defaults."""
from __future__ import annotations

import os
import sys

import typer

from cli import compare, data, models, run
from cli.common import console, fail
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
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from infra.allocator import keep_freed_memory

    keep_freed_memory()  # what this process computes itself (metrics, in-process stages) reuses freed pages
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - sorted into user errors (one line) and bugs (re-raised)
        from tasks.errors import user_error

        err = user_error(e)
        if err is None or os.environ.get("REINSTRUMENT_DEBUG"):
            raise
        try:
            fail(err)
        except typer.Exit:
            sys.exit(1)


if __name__ == "__main__":
    main()
