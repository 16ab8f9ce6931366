"""`reinstrument compare`: every method, every task, on held-out inputs (jobs/compare.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cli.common import USAGE, ConfigOpt, DecoderOpt, GuidanceOpt, PrefectOpt, TargetOpt, console, fail, load_config, run, t_init_option
from cli.run import VocoderOpt


def _per_task(values: list[str] | None, what: str) -> dict[str, str]:
    """TASK=URI options -> {task: uri}."""
    out = {}
    for v in values or ():
        task, sep, uri = v.partition("=")
        if not sep or not uri:
            fail(ValueError(f"--{what} {v!r}: expected TASK=MODEL_URI, e.g. timbre=models:/reinstrument-violin@champion"), USAGE)
        out[task] = uri
    return out


def compare(
    inputs: str = typer.Option(..., help="Clips dataset of a corpus (guides, true targets and pieces are known)."),
    model: str = typer.Option(None, help="Target model, e.g. models:/reinstrument-flute-latent@champion."),
    target: str = TargetOpt,
    guidance: float = GuidanceOpt,
    decoder: str = DecoderOpt,
    task: list[str] = typer.Option(None, help="timbre | midi2real | enhance (repeat; default all three)."),
    source_model: list[str] = typer.Option(None, help="DDIB: TASK=the guide domain's model (repeat)."),
    conditional_model: list[str] = typer.Option(None, help="Conditional baseline: TASK=its model (repeat)."),
    t_init: str = typer.Option(None, help="Operating point (default: the newest sweep's for this model under OUT); "
                                           "auto: also a row with tau_init chosen per clip by the instrument probe."),
    lam: float = typer.Option(None, help="With --t-init: its lambda (default 1)."),
    neighbour: list[float] = typer.Option(None, help="tau_init offsets of the neighbours (repeat; default -0.05 0.05)."),
    timbre_domain: str = typer.Option(None, help="timbre: the guide instrument (default violin)."),
    split: str = typer.Option(None, help="Split of the inputs (default test; all: every split, for inputs held out by piece)."),
    limit: int = typer.Option(None, help="At most this many inputs per task."),
    exclude_pieces_of: list[str] = typer.Option(None, help="Clips dataset whose pieces are never inputs (repeat), "
                                                "e.g. the corpus the models trained on."),
    reference: str = typer.Option(None, help="Clips dataset with the target domain's real clips (default: the inputs)."),
    vocoder: str = VocoderOpt,
    seed: int = typer.Option(None, help="Run seed."),
    actors: int = typer.Option(2, help="Ray actors per method (0: in this process)."),
    out: str = typer.Option(None, help="Root (default DATA_ROOT); results under OUT/compare/<compare_id>/."),
    config: Optional[Path] = ConfigOpt,
    prefect: bool = PrefectOpt,
):
    """Compare warm init (at the sweep's operating point and its neighbours) with identity, DDIB, the
    conditional baseline and plain generation on the same held-out inputs: tables with 95 % intervals,
    a FAD-vs-JD plot and a listening page."""
    from flows.pipeline import compare_methods
    from infra.settings import get_settings
    from jobs.compare import compare_job
    from schemas.compare import CompareConfig
    from schemas.transform import TransformLogistics

    t_init, auto = t_init_option(t_init)
    cfg = load_config(CompareConfig, config, model=model, target=target, guidance=guidance, decoder=decoder,
                      tasks=tuple(task or ()), auto=auto,
                      t_init=t_init, lam=lam,
                      source_models=_per_task(source_model, "source-model"),
                      conditional_models=_per_task(conditional_model, "conditional-model"),
                      neighbours=tuple(neighbour or ()), timbre_domain=timbre_domain, split=split, limit=limit,
                      exclude_pieces_of=tuple(exclude_pieces_of or ()), reference_url=reference, vocoder=vocoder,
                      seed=seed)
    out = out or get_settings().data_root
    try:
        res = (run(compare_methods, compare_methods.fn, True, inputs, cfg.model, cfg, out, actors) if prefect else
               compare_job(inputs, cfg, TransformLogistics(num_actors=actors, out_url=out)))
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    from tasks.compare import markdown

    for t in cfg.tasks:  # Markdown: wide rows stay readable in a terminal, a log and a README alike
        for subset in dict.fromkeys(r["subset"] for r in res["summary"] if r["task"] == t):
            print(f"\n## {t} ({subset}; {json.dumps(res['inputs_per_task'][t])})\n{markdown(res['summary'], t, subset)}")
    for t, op in res["operating_points"].items():
        console.print(f"operating point, {t}: {op}")
    console.print(f"table:  {res['table_url']}\nplot:   {res['plot_url']}\nreport: {res['report_url']}\n"
                  f"MLflow parent run: {res['mlflow_run_id']}")
