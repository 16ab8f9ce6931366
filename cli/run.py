"""Commands that transform: transform, sweep, nightly, serve, pull, demo."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from cli.common import (ConfigOpt, DecoderOpt, GuidanceOpt, PrefectOpt, SChurnOpt, SNoiseOpt, STmaxOpt, STminOpt,
                        TargetOpt, console, fail, load_config, moved, old_argument, old_spelling, print_rows, root, run,
                        t_init_option, usage_error)


VocoderOpt = typer.Option(None, help="Decoder: auto (the champion vocoder, else the shipped one, else Griffin-Lim) "
                                     "| griffin-lim | shipped:vocoder | a vocoder model URI.")


def _sampler(name=None, steps=None, S_churn=None, S_tmin=None, S_tmax=None, S_noise=None, solver_steps=None) -> dict:
    return {"name": name, "steps": steps, "S_churn": S_churn, "S_tmin": S_tmin, "S_tmax": S_tmax, "S_noise": S_noise,
            "solver_steps": solver_steps}


SamplerOpt = typer.Option(None, help="heun | euler | dpmpp_2m (default: dpmpp_2m with 6 solver steps; ddib: heun). "
                                     "Another solver than the default starts from its own defaults (the N grid).")
SolverStepsOpt = typer.Option(None, help="K: solver steps from sigma_start (a Karras grid to sigma_min) instead of the "
                                         "N grid's remaining ones; tau_init still picks sigma_start on the N grid.")


def transform(
    inputs: str = typer.Option(..., help="A clips dataset, or a folder/s3:// prefix of audio or MIDI (ingested first)."),
    model: str = typer.Option(None, help="Target model, e.g. models:/reinstrument-flute@champion."),
    target: str = TargetOpt,
    guidance: float = GuidanceOpt,
    decoder: str = DecoderOpt,
    task: str = typer.Option(None, help="timbre | midi2real | enhance (picks the guide role of a corpus)."),
    method: str = typer.Option(None, help="warm_init | ddib | conditional."),
    source_model: str = typer.Option(None, help="ddib: the guide domain's model."),
    t_init: str = typer.Option(None, help="tau_init: fraction of reverse steps skipped (default: the newest sweep's "
                                           "operating point for the model, else 0.6 with lambda 0), or auto: chosen "
                                           "per clip by the instrument probe (with the operating point's lambda)."),
    sigma_start: float = typer.Option(None, help="Start at this sigma instead of a tau_init."),
    lam: float = typer.Option(None, help="lambda: noise scale of the warm start (default 1 with --t-init)."),
    steps: int = typer.Option(None, help="N reverse steps of the full grid (default 35)."),
    sampler: str = SamplerOpt,
    solver_steps: int = SolverStepsOpt,
    S_churn: float = SChurnOpt, S_tmin: float = STminOpt, S_tmax: float = STmaxOpt, S_noise: float = SNoiseOpt,
    seed: int = typer.Option(None, help="Run seed; each clip's noise derives from (seed, clip ID)."),
    vocoder: str = VocoderOpt,
    domain: str = typer.Option(None, help="Corpus inputs: guide domain to take, e.g. violin."),
    role: str = typer.Option(None, help="Corpus inputs: guide role (default: the task's)."),
    split: str = typer.Option(None, help="Corpus inputs: split to take (default all)."),
    limit: int = typer.Option(None, help="At most this many clips."),
    out: str = typer.Option(None, help="Root of run folders (default DATA_ROOT)."),
    run_id: str = typer.Option(None, help="Name the run (default: a hash of the job, so re-runs resume)."),
    actors: int = typer.Option(2, help="Ray actors (0: in this process)."),
    gpu: bool = typer.Option(False, help="One GPU per actor, bf16."),
    clips_per_task: int = typer.Option(4, help="Clips per actor call and per committed shard."),
    output_format: str = typer.Option(None, "--format", help="Whole recordings as flac (default) or wav."),
    sample_rate: str = typer.Option(None, help="Whole recordings at the model's rate (default) or the source's "
                                               "(resampled: it adds no bandwidth)."),
    config: Optional[Path] = ConfigOpt,
    prefect: bool = PrefectOpt,
):
    """Transform recordings (a folder or s3:// prefix) or a corpus into the target instrument, exactly once: one
    whole file per recording, named after it, under OUT/runs/<run_id>/recordings/ (and every clip under audio/)."""
    from flows.pipeline import transform_flow
    from jobs.operating_point import for_model
    from jobs.transform import transform_job
    from schemas.transform import InputSelection, TransformConfig, TransformLogistics, WholeOutputs

    # No start given here or in the config file: the newest sweep's operating point for this model
    # (and instrument), else the default; a given warm start replaces the default whole.
    file_cfg = json.loads(config.read_text()) if config else {}
    sel = load_config(InputSelection, None, domain=domain, role=role, split=split, limit=limit)
    log = load_config(TransformLogistics, None, num_actors=actors, use_gpu=gpu, clips_per_task=clips_per_task,
                      out_url=out or root(), run_id=run_id)
    whole = load_config(WholeOutputs, None, format=output_format, sample_rate=sample_rate)
    origin, point_sampler = "given", None
    t_init, auto = t_init_option(t_init)
    if t_init is None and sigma_start is None and not {"t_init", "sigma_start"} & set(file_cfg.get("warm", {})):
        if not (model or file_cfg.get("model")):
            usage_error("transform needs --model (e.g. shipped:instruments-latent, or models:/<name>@champion)")
        try:
            point, point_sampler, origin = for_model(model or file_cfg["model"], out or root(),
                                                     task or file_cfg.get("task", "timbre"), target or file_cfg.get("target"))
        except ValueError as e:
            fail(e)
        t_init, lam = point.t_init, point.lam if lam is None else lam
        console.print(f"operating point: τ_init {'auto (per clip)' if auto else f'{t_init:g}'}, λ {lam:g} from {origin}")
    given_sampler = _sampler(sampler, steps, S_churn, S_tmin, S_tmax, S_noise, solver_steps)
    if point_sampler is not None and not any(v is not None for v in given_sampler.values()) \
            and "sampler" not in file_cfg:
        given_sampler = point_sampler.model_dump()   # the sweep's own sampler settings, applied whole
    cfg = load_config(TransformConfig, config, task=task, method=method, model=model, source_model=source_model,
                      target=target, source=domain if method == "ddib" else None, guidance=guidance, decoder=decoder,
                      warm={"t_init": t_init, "sigma_start": sigma_start, "lam": lam},
                      sampler=given_sampler, seed=seed, vocoder=vocoder, auto=auto)
    log = log.model_copy(update={"operating_point": origin})
    try:
        res = run(transform_flow, transform_job, prefect, inputs, sel, cfg, log, whole=whole)
    except ValueError as e:
        fail(e)
    shown = ("run_url", "outputs_url", "recordings_url")
    print_rows([{"": k, "value": v} for k, v in res.items() if k not in shown and not (k.startswith("recordings_")
                                                                                      and not res["recordings"])],
               "transform")
    if res["recordings"]:
        console.print(f"recordings:    {res['recordings_url']}/")
    console.print(f"outputs table: {res['outputs_url']}\nclip audio:    {res['run_url']}/audio/\n"
                  f"MLflow run:    {res['mlflow_run_id']}")


def sweep(
    inputs: str = typer.Option(..., help="Clips dataset (or folder/s3:// prefix of audio/MIDI) to transform."),
    model: str = typer.Option(None, help="Target model, e.g. models:/reinstrument-flute@champion."),
    target: str = TargetOpt,
    guidance: float = GuidanceOpt,
    decoder: str = DecoderOpt,
    task: str = typer.Option(None, help="timbre | midi2real | enhance."),
    method: str = typer.Option(None, help="warm_init | ddib (the conditional baseline has no tau_init to sweep: "
                                           "`reinstrument compare` scores it)."),
    source_model: str = typer.Option(None, help="ddib: the guide domain's model."),
    t_init: list[str] = typer.Option(None, help="tau_init grid point (repeat); default a grid dense in 0.3-0.7. "
                                                "auto: also score tau_init chosen per clip, beside the curve."),
    sigma_start: list[float] = typer.Option(None, help="sigma grid point (repeat) instead of tau_init."),
    lam: list[float] = typer.Option(None, help="lambda (repeat); default 0 and 1."),
    steps: int = typer.Option(None, help="N reverse steps of the full grid (default 35)."),
    sampler: str = SamplerOpt,
    solver_steps: int = SolverStepsOpt,
    S_churn: float = SChurnOpt, S_tmin: float = STminOpt, S_tmax: float = STmaxOpt, S_noise: float = SNoiseOpt,
    domain: str = typer.Option(None, help="Guide domain of a corpus, e.g. violin."),
    split: str = typer.Option("test", help="Split of the inputs (held out from training)."),
    limit: int = typer.Option(None, help="At most this many input clips."),
    reference: str = typer.Option(None, help="Target-domain reference clips dataset (default: the inputs)."),
    reference_split: str = typer.Option(None, help="Split of the reference clips (default train)."),
    embedding: str = typer.Option(None, help="FAD embedding: musicnn | musicnn-mtt."),
    vocoder: str = VocoderOpt,
    vocoded_diagnostic: bool = typer.Option(None, "--vocoded-diagnostic", help="Also report FAD against the "
                                            "reference decoded by the same vocoder (metric fad_vocoded)."),
    anchors: bool = typer.Option(None, "--anchors/--no-anchors", help="Also score plain generation and the true "
                                 "target (default on; off saves one transform)."),
    seed: int = typer.Option(None, help="Run seed."),
    actors: int = typer.Option(2, help="Ray actors per grid point (0: in this process)."),
    out: str = typer.Option(None, help="Root (default DATA_ROOT); results under OUT/sweeps/<sweep_id>/."),
    config: Optional[Path] = ConfigOpt,
    prefect: bool = PrefectOpt,
):
    """The tau_init sweep: FAD and JD per grid point, trade-off plots, a recommended operating point."""
    from flows.pipeline import sweep_t_init
    from infra.settings import get_settings
    from jobs.sweep import sweep_job
    from schemas.sweep import SweepConfig
    from schemas.transform import InputSelection, TransformLogistics

    parsed = [t_init_option(t) for t in t_init or ()]
    auto = next((a for _, a in parsed if a), None)
    t_inits = tuple(t for t, _ in parsed if t is not None)
    cfg = load_config(SweepConfig, config, {"t_inits": None} if sigma_start else {}, task=task, method=method, model=model,
                      source_model=source_model, target=target, source=domain if method == "ddib" else None,
                      guidance=guidance, decoder=decoder, t_inits=t_inits, sigma_starts=tuple(sigma_start or ()), auto=auto,
                      lams=tuple(lam or ()), seed=seed,
                      sampler=_sampler(sampler, steps, S_churn, S_tmin, S_tmax, S_noise, solver_steps),
                      embedding=embedding, reference_url=reference, reference_split=reference_split, vocoder=vocoder,
                      vocoded_diagnostic=vocoded_diagnostic, anchors=anchors)
    try:
        if prefect:  # the deployment's parameters
            res = run(sweep_t_init, sweep_t_init.fn, True, inputs, cfg.model, cfg.task, domain, split, limit, cfg, out, actors)
        else:
            res = sweep_job(inputs, InputSelection(domain=domain, split=split, limit=limit), cfg,
                            TransformLogistics(num_actors=actors, out_url=out or get_settings().data_root))
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    for lam_label, rec in res["recommended"].items():
        console.print(f"recommended for lambda={lam_label}: {rec}")
    console.print(f"operating point: {res.get('operating_point')}")
    console.print(f"metrics: {res['metrics_url']}\nplot:    {res['plot_url']}\nreport:  {res['report_url']}\n"
                  f"MLflow parent run: {res['mlflow_run_id']}")


def _nightly_targets(model: list[str] | None, target: str | None) -> list:
    """--model URI[=instrument] (repeat) and --target instrument (for each model that names none).
    The old spelling `--target URI[=instrument]` (a model URI under --target) still works, with a notice."""
    from schemas.nightly import NightlyTarget

    model = list(model or ())
    if target and (":" in target or "/" in target):  # a URI: the old meaning of --target
        console.print("notice: --target URI is deprecated; use --model URI (and --target for the instrument)")
        model, target = [*model, target], None
    try:
        targets = [NightlyTarget.parse(m) for m in model]
        return [t.model_copy(update={"target": t.target or target}) for t in targets]
    except ValueError as e:
        usage_error(f"--model: {e}")


NightlyModelOpt = typer.Option(None, help="Model URI (repeat); URI=instrument for one instrument of a model of "
                               "several, e.g. shipped:instruments-latent=cello.")
NightlyTargetOpt = typer.Option(None, help="The instrument, for each --model that names none (e.g. flute).")


def serve(
    inputs: str = typer.Option(None, help="Prefix the nightly job watches (folder or s3://)."),
    model: list[str] = NightlyModelOpt,
    target: str = NightlyTargetOpt,
    out: str = typer.Option(None, help="Root for outputs (default DATA_ROOT)."),
    cron: str = typer.Option("0 2 * * *", help="Nightly schedule (UTC cron)."),
    actors: int = typer.Option(2, help="Ray actors per transform."),
    nightly_inputs: str = old_spelling("--nightly-inputs", "--inputs"),
):
    """Serve the `sweep-t-init`, `compare-methods` and `reinstrument-nightly` deployments (needs PREFECT_API_URL)."""
    from flows.deploy import serve_all

    if not os.environ.get("PREFECT_API_URL"):
        usage_error("PREFECT_API_URL is not set; start a server (prefect server start) and export "
                    "PREFECT_API_URL=http://127.0.0.1:4200/api")
    serve_all(nightly_inputs=moved("--nightly-inputs", "--inputs", nightly_inputs, inputs),
              nightly_targets=_nightly_targets(model, target) or None, out=out, cron=cron, actors=actors)


def nightly(
    inputs: str = typer.Option(None, help="Prefix to watch (folder or s3://); required here or in --config."),
    model: list[str] = NightlyModelOpt,
    target: str = NightlyTargetOpt,
    out: str = typer.Option(None, help="Root (default DATA_ROOT); outputs under OUT/nightly/<date>/."),
    vocoder: str = typer.Option(None, help="Decoder of every target that names none: auto (the champion vocoder, else "
                                "the shipped one, else Griffin-Lim) | griffin-lim | shipped:vocoder | a vocoder model URI."),
    seed: int = typer.Option(None, help="Run seed; each clip's noise derives from (seed, clip ID)."),
    steps: int = typer.Option(None, help="N reverse steps (default: the operating point's sampler)."),
    t_init: str = typer.Option(None, help="auto: every target's tau_init chosen per clip by the instrument probe "
                                          "(default: each target's operating point)."),
    actors: int = typer.Option(None, help="Ray actors (0: transform in this process; default 2)."),
    clips_per_task: int = typer.Option(None, help="Clips per actor call and per committed shard (default 4)."),
    config: Optional[Path] = ConfigOpt,
    prefect: bool = PrefectOpt,
):
    """Run the nightly job once: transform what arrived since the last successful run. The same
    settings as the reinstrument-nightly deployment's parameters (`reinstrument config show nightly`)."""
    from flows.pipeline import nightly_flow
    from jobs.nightly import nightly_job
    from schemas.nightly import NightlyConfig

    if t_init is not None and t_init.strip().lower() != "auto":
        usage_error(f"nightly --t-init: expected auto (a fixed tau_init per target goes in --config), got {t_init!r}")
    targets = [t.model_dump(exclude_none=True) | ({"t_init": "auto"} if t_init else {})
               for t in _nightly_targets(model, target)]
    cfg = load_config(NightlyConfig, config, inputs=inputs, targets=targets, out=out, vocoder=vocoder, seed=seed,
                      steps=steps, actors=actors, clips_per_task=clips_per_task)
    try:
        if prefect:
            res = run(nightly_flow, None, True, **cfg.model_dump(exclude={"targets"}), targets=list(cfg.targets))
        else:
            res = nightly_job(cfg)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    print_rows(res["runs"], f"nightly ({res['new_commits']} new ingestion commits, {res['done_commits']} done in all)")


def pull(
    run_url: str = typer.Argument(..., metavar="RUN", help="A run folder: s3://bucket/prefix/runs/<run_id> (or a local path)."),
    out: str = typer.Option(None, help="Local folder to pull into (default: the run's ID, here)."),
    clips: bool = typer.Option(None, "--clips/--no-clips", help="Also bring every clip output's audio (default: only "
                               "for a run without whole recordings)."),
    dest: str = old_argument("DEST", "--out"),
):
    """Download a run's whole recordings (or clip audio), its tables and run.json; verify every file's SHA-256."""
    from tasks.pull import pull_run

    dest = moved("the positional DEST", "--out", dest, out) or run_url.rstrip("/").rsplit("/", 1)[-1]
    try:
        res = pull_run(run_url, dest, clips)
    except ValueError as e:
        fail(e)
    what = f"{res.recordings} whole recordings (recordings/)" if res.recordings else "clip outputs (audio/)"
    if res.recordings and res.files > res.recordings:
        what += f" and {res.files - res.recordings} clip outputs (audio/)"
    console.print(f"{what}: {res.fetched} fetched, {res.skipped} already present and verified -> {res.dest}\n"
                  f"check again any time: (cd {dest} && sha256sum -c SHA256SUMS)")


def demo(
    out: str = typer.Option("./reinstrument-data/demo", help="Where the demo writes (local or s3://)."),
    pieces: int = typer.Option(24, help="Tunes to render (about half are held out as the sweep's guides)."),
    train: bool = typer.Option(False, "--train/--shipped", help="Train the flute denoiser here (features, then "
                               "training) instead of sweeping the shipped one (weights/, registered in MLflow)."),
    representation: str = typer.Option(None, help="--train: logmel | latent (default latent)."),
    train_steps: int = typer.Option(None, help="--train: training steps (default 9500 for latent, 5000 for logmel)."),
    train_workers: int = typer.Option(0, help="Ray Train workers (0: train in this process, fastest on 2 cores)."),
    actors: int = typer.Option(2, help="Ray actors for features and transformation."),
    t_init: list[float] = typer.Option(None, help="tau_init grid point (repeat); default the demo's grid, "
                                                  "dense where the demo model's trade-off happens."),
    lam: list[float] = typer.Option(None, help="lambda (repeat); default 0: the shipped model's sweep puts its knee there."),
    S_churn: float = typer.Option(None, "--S_churn", "--s-churn", help="Sample with Heun 35 and this S_churn (default: "
                                  "DPM-Solver++(2M), 6 steps; with --S_tmin alone, S_churn 7)."),
    S_tmin: float = typer.Option(None, "--S_tmin", "--s-tmin", help="Heun's S_tmin: churn only at sigma >= this (default 0.5)."),
    prefect: bool = PrefectOpt,
    root_url: str = old_spelling("--root", "--out"),
):
    """The main job on the embedded defaults: corpus, the shipped models registered in MLflow (or,
    with --train, features and a flute denoiser trained here), and a tau_init sweep of
    violin->flute on held-out fiddle tunes. A second run reuses the first's work."""
    from flows.pipeline import demo_flow
    from infra.tracking import tracking_uri
    from jobs.demo import DEMO_CORPUS, demo_job, sweep_table
    from schemas.diffusion import SamplerConfig
    from schemas.configs import CorpusConfig

    if representation not in (None, "logmel", "latent"):
        usage_error(f"--representation {representation!r}: expected logmel or latent")
    if not train and (representation or train_steps):
        usage_error("--representation and --train-steps choose what --train trains; add --train")
    overrides = ({"t_inits": tuple(t_init)} if t_init else {}) | ({"lams": tuple(lam)} if lam else {})
    overrides |= ({"train_steps": train_steps} if train_steps else {}) | ({"representation": representation} if representation else {})
    churned = {k: v for k, v in (("S_churn", S_churn), ("S_tmin", S_tmin)) if v is not None}
    # churn is Heun's (EDM Algorithm 2): asking for it selects Heun 35 with these settings
    overrides |= {"sampler": SamplerConfig(name="heun", **{"S_churn": 7.0, "S_tmin": 0.5} | churned)} if churned else {}
    corpus = load_config(CorpusConfig, None, base=DEMO_CORPUS.model_dump(mode="json"), tunes_per_file=pieces)
    out = moved("--root", "--out", root_url, None) or out
    res = run(demo_flow, demo_job, prefect, out, corpus,
              train=train, actors=actors, train_workers=train_workers, **overrides)
    c, f, t, s = res["corpus"], res["features"], res["trained"], res["sweep"]
    print_rows(c["summary"], "reference corpus (role, domain, split)")
    console.print(f"corpus: {c['pieces_built']} pieces rendered now, {c['pieces_skipped']} reused")
    if f:
        console.print(f"features: {f['shards_added']} shards added now, {f['skipped']} reused ({f['rows']} segments)")
    if t:
        console.print(f"trained: val loss {t.get('val_loss', float('nan')):.4f}")
    console.print(f"model:  {res['model']}")
    table, notes = sweep_table(s["metrics_url"])
    lams = sorted({r.get("lambda") for r in table} - {None})
    print_rows(table, "sweep-t-init" + ("" if lams else f" (lambda {(lam or [0])[0]:g})")
               + ": violin -> flute on held-out tunes, FAD vs real flute of other tunes (95 % bootstrap CI)")
    for note in notes:
        console.print(f"[yellow]{note}[/yellow]" if note.startswith("FAD does not") else note)
    for lam_label, rec in s["recommended"].items():
        console.print(f"[bold]recommended tau_init (lambda={lam_label}): {rec.get('t_init')}[/bold] "
                      f"(JD {rec['jd']:.3f}, FAD {rec['fad']:.2f}; {rec['rule']})")
    console.print(f"report:    {s['report_url']}\nplot:      {s['plot_url']}\nmetrics:   {s['metrics_url']}")
    console.print(f"MLflow UI: mlflow ui --backend-store-uri {tracking_uri()}  (then open http://127.0.0.1:5000)")
