"""The `reinstrument` command line. Every command has --help; options override a --config
JSON file, which overrides the defaults (`reinstrument config show KIND` prints them)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Re-instrument music corpora with diffusion models.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
corpus_app = typer.Typer(help="The reference corpus rendered from music21 scores.", no_args_is_help=True)
config_app = typer.Typer(help="Typed configs: defaults and validation.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")
app.add_typer(config_app, name="config")
metrics_app = typer.Typer(help="Realism (FAD) and faithfulness (pitch JD) of audio sets.", no_args_is_help=True)
app.add_typer(metrics_app, name="metrics")
console = Console(stderr=True)

CONFIG_KINDS = {"corpus": "CorpusConfig", "ingest": "IngestConfig", "augment": "AugmentConfig",
                "features": "FeatureConfig"}
PrefectOpt = typer.Option(True, "--prefect/--no-prefect",
                          help="Run as a Prefect flow (history, logs; starts a temporary API if "
                               "PREFECT_API_URL is unset) or call the function directly.")
# Stochastic Heun (EDM Algorithm 2), shared by transform, sweep and demo.
ChurnOpt = typer.Option(0.0, help="Heun's S_churn (EDM Algorithm 2; 0: the deterministic ODE).")
ChurnSigmaMinOpt = typer.Option(0.0, help="S_tmin: churn only at sigma >= this.")


def _config(kind: str, path: Optional[Path], **overrides):
    import schemas.configs as c

    cls = getattr(c, CONFIG_KINDS[kind])
    data = json.loads(path.read_text()) if path else {}
    data.update({k: v for k, v in overrides.items() if v not in (None, [], ())})
    try:
        return cls.model_validate(data)
    except Exception as e:
        console.print(f"[red]invalid {kind} config:[/red] {e}")
        raise typer.Exit(2) from None


def _run(flow_obj, job, use_prefect: bool, **kwargs):
    """The Prefect flow (with a Prefect API: PREFECT_API_URL's, or a temporary one on 127.0.0.1
    that dies with this process) or the same job as a plain function, with no Prefect at all."""
    if not use_prefect:
        return job(**kwargs)
    from infra.prefect_api import prefect_api

    with prefect_api():
        return flow_obj(**kwargs)


def _print_rows(rows: list[dict], title: str) -> None:
    if not rows:
        console.print(f"{title}: (empty)")
        return
    t = Table(title=title)
    for c in rows[0]:
        t.add_column(str(c))
    for r in rows:
        t.add_row(*[f"{v:.2f}" if isinstance(v, float) else str(v) for v in r.values()])
    Console().print(t)


def _root() -> str:
    from infra.settings import get_settings

    return get_settings().data_root


@corpus_app.command("build")
def corpus_build(
    dest: str = typer.Option(None, help="Destination URL (local path or s3://); default DATA_ROOT/corpus."),
    pieces: int = typer.Option(None, help="How many pieces (default 16)."),
    collection: str = typer.Option(None, help="music21 collection, e.g. bach, palestrina, monteverdi."),
    midi_dir: str = typer.Option(None, help="A folder/S3 prefix of MIDI files to use instead of music21."),
    instrument: list[str] = typer.Option(None, help="GM instrument (repeat): flute, violin, cello, ..."),
    soundfont: list[str] = typer.Option(None, help="fluidr3, timgm6mb, musescore (repeat)."),
    voice: list[str] = typer.Option(None, help="soprano, alto, tenor, bass, mix, part<i> (repeat)."),
    workers: int = typer.Option(2, help="Processes rendering in parallel."),
    config: Optional[Path] = typer.Option(None, help="CorpusConfig JSON."),
    prefect: bool = PrefectOpt,
):
    """Render a reference corpus: clean clips per (voice, instrument, soundfont), MIDI guides
    and degraded guides, split by piece. Example:
    reinstrument corpus build --dest ./data/corpus --pieces 16 --instrument flute --instrument violin"""
    from flows.data import corpus_build_flow, corpus_job

    cfg = _config("corpus", config, max_pieces=pieces, collection=collection, midi_dir=midi_dir,
                  instruments=instrument, soundfonts=soundfont, voices=voice)
    res = _run(corpus_build_flow, corpus_job, prefect, dest=dest or f"{_root()}/corpus", config=cfg, workers=workers)
    _print_rows(res["summary"], "reference corpus")
    console.print(f"built {res['pieces_built']} pieces ({res['pieces_skipped']} already there), "
                  f"{res['clips_added']} clips added; out-of-range notes {res['out_of_range_notes']}")
    console.print(f"clips: {res['clips_url']}")


@app.command()
def ingest(
    src: str = typer.Argument(..., help="Folder or s3:// prefix of audio (wav/flac/ogg/mp3) and MIDI."),
    dest: str = typer.Argument(..., help="Destination root; writes DEST/clips and DEST/quarantine."),
    sidecar: str = typer.Option(None, help="CSV/Parquet with columns path, domain[, split]."),
    domain_pattern: str = typer.Option(None, help="Regex on the relative path with group 'domain'."),
    clip_s: float = typer.Option(None, help="Clip length in seconds (default 10)."),
    overlap_s: float = typer.Option(None, help="Overlap between clips in seconds (default 1)."),
    sample_rate: int = typer.Option(None, help="Output sample rate in Hz (default 16000)."),
    config: Optional[Path] = typer.Option(None, help="IngestConfig JSON."),
    prefect: bool = PrefectOpt,
):
    """Ingest a corpus: bad files go to quarantine with a reason; re-runs add nothing. Example:
    reinstrument ingest s3://bucket/raw ./data/ingested --domain-pattern '^(?P<domain>[^/]+)/'"""
    from flows.data import ingest_flow, ingest_job

    clip = {k: v for k, v in dict(clip_s=clip_s, overlap_s=overlap_s, sample_rate_hz=sample_rate).items()
            if v is not None}
    base = json.loads(config.read_text()) if config else {}
    if clip:
        base["clip"] = dict(base.get("clip", {}), **clip)
    cfg = _config("ingest", None, **base, domain_pattern=domain_pattern)
    res = _run(ingest_flow, ingest_job, prefect, src=src, dest=dest, config=cfg, sidecar=sidecar)
    console.print(f"sources {res['sources_seen']} (skipped {res['sources_skipped']} already done), "
                  f"clips added {res['clips_added']}, quarantined {res['quarantined']}")
    console.print(f"clips: {res['clips_url']}\nquarantine: {res['quarantine_url']}")


@app.command()
def augment(
    clips: str = typer.Argument(..., help="Clips dataset URL to read."),
    out: str = typer.Argument(..., help="Clips dataset URL to write the shifted clips to."),
    shift: list[int] = typer.Option(None, help="Semitone shift (repeat), e.g. --shift -12 --shift 7."),
    split: list[str] = typer.Option(None, help="Splits to augment (default train)."),
    role: list[str] = typer.Option(None, help="Roles to augment (default clean)."),
    config: Optional[Path] = typer.Option(None, help="AugmentConfig JSON."),
    prefect: bool = PrefectOpt,
):
    """Pitch-augment clips: MIDI-backed clips are re-rendered transposed (exact), audio-only
    clips use librosa's phase vocoder. Example: reinstrument augment ./data/corpus/clips ./data/aug --shift -12 --shift 12"""
    from flows.data import augment_flow, augment_job

    cfg = _config("augment", config, shifts_semitones=shift, splits=split, roles=role)
    res = _run(augment_flow, augment_job, prefect, clips=clips, out=out, config=cfg)
    console.print(f"augmented clips added {res['clips_added']}, skipped {res['clips_skipped']}: {res['out_url']}")


@app.command()
def train(
    features_url: str = typer.Argument(..., help="A feature set URL (…/features/logmel-<hash>)."),
    domain: str = typer.Option(..., help="Target domain to model, e.g. flute."),
    cond_domain: str = typer.Option(None, help="Conditional baseline: train DOMAIN from this paired source domain."),
    cond_role: str = typer.Option("clean", help="Role of the paired source rows (clean, midi_guide, degraded)."),
    preset: str = typer.Option("cpu-demo", help="Training preset: tiny, cpu-demo, gpu."),
    steps: int = typer.Option(None, help="Optimisation steps (preset default otherwise)."),
    batch_size: int = typer.Option(None, help="Global batch, split across workers."),
    lr: float = typer.Option(None, help="Peak learning rate."),
    seed: int = typer.Option(None, help="Run seed (every draw derives from it)."),
    checkpoint_every: int = typer.Option(None, help="Steps between checkpoints."),
    workers: int = typer.Option(2, help="Ray Train workers (0: train in this process)."),
    gpu: bool = typer.Option(False, help="GPU workers (bf16 autocast unless --precision fp32)."),
    precision: str = typer.Option("auto", help="auto | fp32 | bf16."),
    out: str = typer.Option(None, help="Root of run folders; default DATA_ROOT/training."),
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="Continue a run with the same identity from its last checkpoint."),
    register: bool = typer.Option(True, "--register/--no-register", help="Register the model in MLflow."),
    config: Optional[Path] = typer.Option(None, help="TrainConfig JSON (overrides the preset)."),
    prefect: bool = PrefectOpt,
):
    """Train the EDM denoiser of one domain on Ray Train and register it as
    reinstrument-<domain> (alias `champion` if it validates better). Example:
    reinstrument train ./data/features/logmel-… --domain flute --preset cpu-demo"""
    from flows.train import train_flow, train_model
    from schemas.training import TRAIN_PRESETS, TrainConfig, TrainLogistics

    if preset not in TRAIN_PRESETS:
        console.print(f"[red]unknown preset {preset!r}[/red]; expected one of {sorted(TRAIN_PRESETS)}")
        raise typer.Exit(2)
    from infra.storage import Storage

    # Absolute, so the run's identity (and its Ray workers) do not depend on the working directory.
    data = dict(TRAIN_PRESETS[preset], domain=domain, features_url=Storage(features_url).absolute_url())
    data.update(json.loads(config.read_text()) if config else {})
    if cond_domain:
        data.update(cond_domain=cond_domain, cond_role=cond_role)
    data.update({k: v for k, v in dict(steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                       checkpoint_every=checkpoint_every).items() if v is not None})
    try:
        cfg = TrainConfig.model_validate(data)
        logistics = TrainLogistics(num_workers=workers, use_gpu=gpu, precision=precision, resume=resume,
                                   register_model=register, out_url=out or f"{_root()}/training")
    except Exception as e:
        console.print(f"[red]invalid training config:[/red] {e}")
        raise typer.Exit(2) from None
    res = _run(train_flow, train_model, prefect, cfg=cfg, logistics=logistics)
    Console().print_json(json.dumps(res, default=str))


@app.command("warm-probe")
def warm_probe_cmd(
    features_url: str = typer.Argument(..., help="A feature set holding both domains."),
    model: str = typer.Option(..., help="MLflow model URI, e.g. models:/reinstrument-flute@champion."),
    guide_domain: str = typer.Option(..., help="Domain of the guides, e.g. violin."),
    t_init: list[float] = typer.Option([1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.0], help="tau_init values (repeat)."),
    steps: int = typer.Option(35, help="Reverse steps N of the full grid."),
    segments: int = typer.Option(32, help="Guide segments (valid/test split)."),
):
    """Warm-start guides of another domain with a trained model and report, per tau_init, the
    probability a timbre probe gives the model's domain and how far outputs moved from guides."""
    from flows.probe import warm_probe

    _print_rows(warm_probe(model, features_url, guide_domain, list(t_init), steps=steps, segments=segments),
                f"warm start: {guide_domain} guides -> {model}")


@app.command()
def features(
    clips: list[str] = typer.Argument(..., help="One or more clips dataset URLs."),
    out: str = typer.Option(None, help="Feature root; the set lands in OUT/<kind>-<config hash>."),
    actors: int = typer.Option(2, help="Ray actors (RAY_ADDRESS selects a cluster)."),
    local: bool = typer.Option(False, help="Run in-process without Ray."),
    segment_frames: int = typer.Option(None, help="Frames per segment (default 128)."),
    segment_hop_frames: int = typer.Option(None, help="Hop between segments (default 128)."),
    config: Optional[Path] = typer.Option(None, help="FeatureConfig JSON (mel parameters etc.)."),
    prefect: bool = PrefectOpt,
):
    """Extract log-mel segments into Parquet shards with normalisation statistics. Example:
    reinstrument features ./data/corpus/clips --out ./data/features"""
    from flows.data import features_flow, features_job

    cfg = _config("features", config, segment_frames=segment_frames, segment_hop_frames=segment_hop_frames)
    res = _run(features_flow, features_job, prefect, clips=list(clips), out=out or f"{_root()}/features", config=cfg,
               actors=actors, local=local)
    console.print(f"feature shards added {res['shards_added']} (inputs already done {res['skipped']}), "
                  f"rows {res['rows']}\nfeatures: {res['features_url']}")


@app.command()
def inspect(url: str = typer.Argument(..., help="A dataset URL (the folder holding _commits/).")):
    """Show a dataset's manifest: table, shards, rows, and a per-column breakdown."""
    from infra.datasets import ShardedDataset

    ds = ShardedDataset.detect(url)
    m = ds.manifest()
    console.print(f"{m.table} v{m.schema_version}: {len(m.commits)} commits, {len(m.shards)} shards, "
                  f"{m.num_rows} rows listed, updated {m.updated_at}; extra keys {sorted(m.extra)}")
    group = {"clips": ["role", "domain", "split"], "features": ["role", "domain", "split"],
             "quarantine": ["stage", "reason"], "outputs": ["target_domain", "method", "t_init"],
             "metrics": ["metric", "reference"]}[m.table]
    t = ds.read(group)
    counts: dict[tuple, int] = {}
    for r in t.to_pylist():
        k = tuple(r[c] for c in group)
        counts[k] = counts.get(k, 0) + 1
    _print_rows([dict(zip(group, k), rows=n) for k, n in sorted(counts.items())], m.table)


@app.command("mel2audio")
def mel2audio(
    features_url: str = typer.Argument(..., help="Feature set URL (…/logmel-<hash>)."),
    out_wav: Path = typer.Argument(..., help="WAV file to write."),
    feature_id: str = typer.Option(None, help="Segment to invert (default: the first)."),
    n_iter: int = typer.Option(32, help="Griffin-Lim iterations."),
):
    """Listen to a feature segment: Griffin-Lim inversion of its log-mel to a WAV."""
    import numpy as np
    import soundfile as sf

    from infra.datasets import ShardedDataset
    from schemas.configs import FeatureConfig
    from tasks.diffusion.vocoder import GriffinLimVocoder

    ds = ShardedDataset.at(features_url, "features")
    cfg = FeatureConfig.model_validate(ds.manifest().extra["config"])
    vocoder = GriffinLimVocoder(cfg.mel, n_iter=n_iter)
    for _, t in ds.iter_shards():
        for r in t.to_pylist():
            if feature_id in (None, r["feature_id"]):
                x = np.asarray(r["values"], np.float32).reshape(r["num_bins"], r["num_frames"])
                y = vocoder(x[:, : r["num_valid_frames"]])
                sf.write(out_wav, y / max(1e-6, float(np.abs(y).max())) * 0.9, cfg.mel.sample_rate_hz)
                console.print(f"wrote {out_wav} ({y.size / cfg.mel.sample_rate_hz:.2f} s) from {r['feature_id']}")
                return
    console.print(f"[red]feature {feature_id} not found in {features_url}[/red]")
    raise typer.Exit(1)


@app.command()
def transform(
    inputs: str = typer.Option(..., help="A clips dataset, or a folder/s3:// prefix of audio or MIDI (ingested first)."),
    model: str = typer.Option(..., help="Target model, e.g. models:/reinstrument-flute@champion."),
    task: str = typer.Option("timbre", help="timbre | midi2real | enhance (picks the guide role of a corpus)."),
    method: str = typer.Option("warm_init", help="warm_init | ddib | conditional."),
    source_model: str = typer.Option(None, help="ddib: the guide domain's model."),
    t_init: float = typer.Option(None, help="tau_init: fraction of reverse steps skipped (default 0.5)."),
    sigma_start: float = typer.Option(None, help="Start at this sigma instead of a tau_init."),
    lam: float = typer.Option(1.0, help="lambda: noise scale of the warm start."),
    steps: int = typer.Option(35, help="N reverse steps of the full grid."),
    sampler: str = typer.Option("heun", help="heun | euler | dpmpp_2m."),
    churn: float = ChurnOpt,
    churn_sigma_min: float = ChurnSigmaMinOpt,
    seed: int = typer.Option(0, help="Run seed; each clip's noise derives from (seed, clip ID)."),
    domain: str = typer.Option(None, help="Corpus inputs: guide domain to take, e.g. violin."),
    role: str = typer.Option(None, help="Corpus inputs: guide role (default: the task's)."),
    split: str = typer.Option(None, help="Corpus inputs: split to take (default all)."),
    limit: int = typer.Option(None, help="At most this many clips."),
    out: str = typer.Option(None, help="Root of run folders (default DATA_ROOT)."),
    run_id: str = typer.Option(None, help="Name the run (default: a hash of the job, so re-runs resume)."),
    actors: int = typer.Option(2, help="Ray actors (0: in this process)."),
    gpu: bool = typer.Option(False, help="One GPU per actor, bf16."),
    clips_per_task: int = typer.Option(4, help="Clips per actor call and per committed shard."),
    prefect: bool = PrefectOpt,
):
    """Transform a corpus into the model's domain; outputs + table under OUT/runs/<run_id>/, exactly once."""
    from flows.transform import transform_corpus, transform_flow
    from schemas.diffusion import SamplerConfig, WarmStartConfig
    from schemas.transform import InputSelection, TransformConfig, TransformLogistics

    try:
        warm = WarmStartConfig(t_init=0.5 if t_init is None and sigma_start is None else t_init,
                               sigma_start=sigma_start, lam=lam)
        cfg = TransformConfig(task=task, method=method, model=model, source_model=source_model, warm=warm,
                              sampler=SamplerConfig(name=sampler, steps=steps, churn=churn,
                                                    churn_sigma_min=churn_sigma_min), seed=seed)
        sel = InputSelection(domain=domain, role=role, split=split, limit=limit)
        log = TransformLogistics(num_actors=actors, use_gpu=gpu, clips_per_task=clips_per_task,
                                 out_url=out or _root(), run_id=run_id)
        res = _run(transform_flow, transform_corpus, prefect, inputs=inputs, selection=sel, cfg=cfg, logistics=log)
    except ValueError as e:
        _fail(e)
    _print_rows([{"": k, "value": v} for k, v in res.items() if k not in ("run_url", "outputs_url")], "transform")
    console.print(f"outputs table: {res['outputs_url']}\naudio:         {res['run_url']}/audio/\n"
                  f"MLflow run:    {res['mlflow_run_id']}")


@app.command()
def sweep(
    inputs: str = typer.Option(..., help="Clips dataset (or folder/s3:// prefix of audio/MIDI) to transform."),
    model: str = typer.Option(..., help="Target model, e.g. models:/reinstrument-flute@champion."),
    task: str = typer.Option("timbre", help="timbre | midi2real | enhance."),
    method: str = typer.Option("warm_init", help="warm_init | ddib."),
    source_model: str = typer.Option(None, help="ddib: the guide domain's model."),
    t_init: list[float] = typer.Option(None, help="tau_init grid point (repeat); default a grid dense in 0.3-0.7."),
    sigma_start: list[float] = typer.Option(None, help="sigma grid point (repeat) instead of tau_init."),
    lam: list[float] = typer.Option(None, help="lambda (repeat); default 0 and 1."),
    steps: int = typer.Option(35, help="N reverse steps of the full grid."),
    churn: float = ChurnOpt,
    churn_sigma_min: float = ChurnSigmaMinOpt,
    domain: str = typer.Option(None, help="Guide domain of a corpus, e.g. violin."),
    split: str = typer.Option("test", help="Split of the inputs (held out from training)."),
    limit: int = typer.Option(None, help="At most this many input clips."),
    reference: str = typer.Option(None, help="Target-domain reference clips dataset (default: the inputs)."),
    reference_split: str = typer.Option("train", help="Split of the reference clips."),
    embedding: str = typer.Option("musicnn", help="FAD embedding: musicnn | musicnn-mtt."),
    seed: int = typer.Option(0, help="Run seed."),
    actors: int = typer.Option(2, help="Ray actors per grid point (0: in this process)."),
    out: str = typer.Option(None, help="Root (default DATA_ROOT); results under OUT/sweeps/<sweep_id>/."),
    prefect: bool = PrefectOpt,
):
    """The tau_init sweep: FAD and JD per grid point, trade-off plots, a recommended tau_init."""
    from flows.sweep import sweep_job, sweep_t_init
    from schemas.diffusion import SamplerConfig
    from schemas.sweep import DEFAULT_T_INITS, SweepConfig

    try:
        cfg = SweepConfig(task=task, method=method, model=model, source_model=source_model,
                          t_inits=None if sigma_start else tuple(t_init or DEFAULT_T_INITS),
                          sigma_starts=tuple(sigma_start) if sigma_start else None, lams=tuple(lam or (0.0, 1.0)),
                          sampler=SamplerConfig(steps=steps, churn=churn, churn_sigma_min=churn_sigma_min),
                          seed=seed, embedding=embedding,
                          reference_url=reference, reference_split=reference_split)
        res = _run(sweep_t_init, sweep_job, prefect, inputs=inputs, model=model, domain=domain, split=split,
                   limit=limit, config=cfg, out=out, actors=actors)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    for lam_label, rec in res["recommended"].items():
        console.print(f"recommended for lambda={lam_label}: {rec}")
    console.print(f"metrics: {res['metrics_url']}\nplot:    {res['plot_url']}\nreport:  {res['report_url']}\n"
                  f"MLflow parent run: {res['mlflow_run_id']}")


@app.command("serve")
def serve_cmd(
    nightly_inputs: str = typer.Option(None, help="Prefix the nightly job watches (folder or s3://)."),
    target: list[str] = typer.Option(None, help="Nightly target model URI (repeat), e.g. models:/reinstrument-flute@champion."),
    out: str = typer.Option(None, help="Root for outputs (default DATA_ROOT)."),
    cron: str = typer.Option("0 2 * * *", help="Nightly schedule (UTC cron)."),
    actors: int = typer.Option(2, help="Ray actors per transform."),
):
    """Serve the `sweep-t-init` and `reinstrument-nightly` deployments (needs PREFECT_API_URL)."""
    from flows.deploy import serve_all

    if not os.environ.get("PREFECT_API_URL"):
        console.print("[red]PREFECT_API_URL is not set[/red]; start a server (prefect server start) and export "
                      "PREFECT_API_URL=http://127.0.0.1:4200/api")
        raise typer.Exit(2)
    serve_all(nightly_inputs=nightly_inputs, nightly_targets=[{"model": t} for t in target] if target else None,
              out=out, cron=cron, actors=actors)


@app.command()
def nightly(
    inputs: str = typer.Option(..., help="Prefix to watch (folder or s3://)."),
    target: list[str] = typer.Option(..., help="Target model URI (repeat)."),
    out: str = typer.Option(None, help="Root (default DATA_ROOT); outputs under OUT/nightly/<date>/."),
    steps: int = typer.Option(None, help="N reverse steps (default: the recommended operating point's, else 35)."),
    actors: int = typer.Option(2, help="Ray actors."),
):
    """Run the nightly job once: transform what arrived since the last successful run."""
    from flows.nightly import nightly as run_nightly

    res = run_nightly(inputs, [{"model": t} for t in target], out or _root(), actors=actors, steps=steps)
    _print_rows(res["runs"], f"nightly ({res['new_commits']} new ingestion commits, {res['done_commits']} done in all)")


@app.command()
def pull(
    run: str = typer.Argument(..., help="A run folder: s3://bucket/prefix/runs/<run_id> (or a local path)."),
    dest: str = typer.Argument(..., help="Local folder to pull into."),
):
    """Download a run's audio, outputs table and manifest; verify every file's SHA-256."""
    from tasks.pull import pull_run

    try:
        res = pull_run(run, dest)
    except ValueError as e:
        _fail(e)
    console.print(f"{res.files} outputs: {res.fetched} fetched, {res.skipped} already present and verified -> {res.dest}\n"
                  f"check again any time: (cd {dest} && sha256sum -c SHA256SUMS)")


def _set_spec(url: str, domain, role, split, limit, label):
    from tasks.metrics.compute import SetSpec

    return SetSpec(url, domain, role, split, limit, label)


def _emit(rows: list[dict], title: str, out: Optional[str], mlflow_run: Optional[str]) -> None:
    _print_rows([{k: r[k] for k in ("metric", "embedding", "reference", "n", "mean", "ci_low", "ci_high")}
                 for r in rows], title)
    if out:
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        from infra.storage import Storage
        from schemas.tables import METRICS

        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=METRICS), buf)
        parent, name = out.rsplit("/", 1) if "/" in out else (".", out)
        Storage(parent).write_bytes(name, buf.getvalue())
        console.print(f"metrics table: {out}")
    if mlflow_run:
        from infra.tracking import log_metrics_table

        log_metrics_table(mlflow_run, rows)
        console.print(f"logged to MLflow run {mlflow_run}")


def _fail(e: BaseException) -> None:
    """One line: what was wrong and what was expected (the exception's own message)."""
    from tasks.errors import describe

    console.print(f"[red]error:[/red] {describe(e)} (REINSTRUMENT_DEBUG=1 shows the traceback)",
                  soft_wrap=True, highlight=False)
    raise typer.Exit(1)


@metrics_app.command("fad")
def metrics_fad(
    evaluated: str = typer.Argument(..., help="Set to score: a folder/s3:// prefix of audio, or a clips dataset."),
    reference: str = typer.Argument(..., help="Reference set of the target domain (folder or clips dataset)."),
    embedding: str = typer.Option("musicnn", help="musicnn (MSD, default) | musicnn-mtt | vggish."),
    vggish_weights: str = typer.Option(None, help="VGGish state-dict file (needed for --embedding vggish)."),
    domain: str = typer.Option(None, help="Reference clips dataset: keep this domain (and name it in the table)."),
    role: str = typer.Option("clean", help="Reference clips dataset: keep this role."),
    split: str = typer.Option(None, help="Reference clips dataset: keep this split."),
    eval_domain: str = typer.Option(None, help="Evaluated clips dataset: keep this domain."),
    eval_role: str = typer.Option(None, help="Evaluated clips dataset: keep this role."),
    eval_split: str = typer.Option(None, help="Evaluated clips dataset: keep this split."),
    limit: int = typer.Option(None, help="At most this many clips per set."),
    cache: str = typer.Option(None, help="Cache reference statistics under this URL (default DATA_ROOT/metrics/reference-stats)."),
    no_cache: bool = typer.Option(False, help="Recompute the reference statistics."),
    boot: int = typer.Option(200, help="Bootstrap resamples for the CI."),
    out: str = typer.Option(None, help="Write the metrics table (Parquet) to this URL."),
    mlflow_run: str = typer.Option(None, help="Log the table to this MLflow run ID."),
):
    """FAD of EVALUATED against REFERENCE: both loudness-normalised, one embedding, bootstrap CI and FAD_inf."""
    from infra.settings import get_settings
    from tasks.metrics.compute import fad_between, fad_table_rows
    from tasks.metrics.embeddings import make_embedding
    from tasks.metrics.sources import is_clips_dataset

    # On a plain folder --domain only names the reference; the filters apply to clips datasets.
    ref_filters = (domain, role, split) if is_clips_dataset(reference) else (None, None, None)
    try:
        emb = make_embedding(embedding, get_settings().weights_dir, vggish_weights)
        ref = _set_spec(reference, *ref_filters, limit, "reference")
        ev = _set_spec(evaluated, eval_domain, eval_role, eval_split, limit, "evaluated")
        cache_url = None if no_cache else (cache or f"{_root()}/metrics/reference-stats")
        result, cached = fad_between(ev, ref, emb, cache_url=cache_url, reference_domain=domain, n_boot=boot)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    console.print(f"reference statistics {'from cache' if cached else 'computed'}; "
                  f"{result.n_clips} clips, {result.n_embeddings} embeddings, {result.silent_clips} silent, "
                  f"{result.short_clips} shorter than one patch (skipped)")
    if result.fad_inf is None:
        console.print("[yellow]fewer embeddings than the embedding has dimensions: FAD is biased upward at this size "
                      "and FAD_inf cannot be extrapolated; compare only sets of equal size[/yellow]")
    _emit(fad_table_rows(result, ref, domain=domain), f"FAD ({result.embedding})", out, mlflow_run)


@metrics_app.command("jd")
def metrics_jd(
    a: str = typer.Argument(..., help="Outputs: folder/s3:// prefix of audio, or a clips dataset."),
    b: str = typer.Argument(..., help="Guides, paired with A by relative path (extension ignored) or clip ID; "
                                      "a <stem>.mid next to a guide adds F1/JD against that MIDI."),
    threshold: float = typer.Option(0.3, help="Basic Pitch note-activation threshold."),
    limit: int = typer.Option(None, help="At most this many items per side."),
    per_item: bool = typer.Option(False, help="Also print every pair's values."),
    out: str = typer.Option(None, help="Write the metrics table (Parquet) to this URL."),
    mlflow_run: str = typer.Option(None, help="Log the table to this MLflow run ID."),
):
    """Pitch Jaccard distance between paired audio (Basic Pitch, ONNX): polyphonic and melody; F1 vs MIDI."""
    from infra.settings import get_settings
    from tasks.metrics.compute import jd_between
    from tasks.metrics.pitch import BasicPitch

    try:
        values, rows = jd_between(_set_spec(a, None, None, None, limit, "A"), _set_spec(b, None, None, None, limit, "B"),
                                  BasicPitch(get_settings().weights_dir), threshold=threshold)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    if per_item:
        _print_rows(values, "per pair")
    _emit(rows, f"pitch metrics (Basic Pitch, threshold {threshold})", out, mlflow_run)


@config_app.command("show")
def config_show(kind: str = typer.Argument(..., help="corpus | ingest | augment | features")):
    """Print a config's defaults as JSON (a starting point for --config)."""
    if kind not in CONFIG_KINDS:
        console.print(f"[red]unknown config {kind!r}[/red]; expected one of {sorted(CONFIG_KINDS)}")
        raise typer.Exit(2)
    print(_config(kind, None).model_dump_json(indent=2))


@app.command()
def demo(
    root: str = typer.Option("./reinstrument-data/demo", help="Where the demo writes (local or s3://)."),
    pieces: int = typer.Option(32, help="Chorales to render (about 1 in 10 is held out for the sweep)."),
    train_steps: int = typer.Option(None, help="Training steps of the cpu-demo model (default: flows/demo.py's, 5,000)."),
    train_workers: int = typer.Option(0, help="Ray Train workers (0: train in this process, fastest on 2 cores)."),
    actors: int = typer.Option(2, help="Ray actors for features and transformation."),
    t_init: list[float] = typer.Option(None, help="tau_init grid point (repeat); default the demo's grid, "
                                                  "dense where the cpu-demo model's trade-off happens."),
    lam: list[float] = typer.Option(None, help="lambda (repeat); default 0 (see flows/demo.py)."),
    churn: float = typer.Option(None, help="Heun's S_churn; default flows/demo.py's (7; 0: the ODE)."),
    churn_sigma_min: float = typer.Option(None, help="S_tmin: churn only at sigma >= this (default 0.5)."),
    prefect: bool = PrefectOpt,
):
    """The main job on the embedded defaults: corpus, features, the cpu-demo flute model, and a
    tau_init sweep of violin->flute on held-out chorales. A second run reuses the first's work."""
    import io

    import pyarrow.parquet as pq

    from flows.demo import DEMO_CORPUS, DEMO_SAMPLER, demo_flow, demo_job
    from infra.storage import Storage
    from infra.tracking import tracking_uri
    from tasks.tradeoff import fad_trend

    cfg = DEMO_CORPUS.model_copy(update={"max_pieces": pieces})
    overrides = ({"t_inits": tuple(t_init)} if t_init else {}) | ({"lams": tuple(lam)} if lam else {})
    overrides |= {"train_steps": train_steps} if train_steps else {}
    churned = {k: v for k, v in (("churn", churn), ("churn_sigma_min", churn_sigma_min)) if v is not None}
    overrides |= {"sampler": DEMO_SAMPLER.model_copy(update=churned)} if churned else {}
    res = _run(demo_flow, demo_job, prefect, root=root, corpus=cfg, actors=actors, train_workers=train_workers, **overrides)
    c, f, t, s = res["corpus"], res["features"], res["trained"], res["sweep"]
    _print_rows(c["summary"], "reference corpus (role, domain, split)")
    console.print(f"corpus: {c['pieces_built']} pieces rendered now, {c['pieces_skipped']} reused; features: "
                  f"{f['shards_added']} shards added now, {f['skipped']} reused ({f['rows']} segments)")
    console.print(f"model:  reinstrument-flute/{t['model_version']} (val loss {t.get('val_loss', float('nan')):.4f})")
    url = s["metrics_url"]
    folder, name = url.rsplit("/", 1)
    rows = pq.read_table(io.BytesIO(Storage(folder).read_bytes(name))).to_pylist()
    by: dict = {}
    for r in rows:
        by.setdefault((r["lam"], r["t_init"]), {})[r["metric"]] = r
    table = []
    for (lam, t_init), m in sorted(by.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        def ci(k: str, digits: int) -> str:
            return f"{m[k]['mean']:.{digits}f} ({m[k]['ci_low']:.{digits}f}–{m[k]['ci_high']:.{digits}f})" if k in m else "-"
        table.append({"tau_init": f"{t_init:g}"} | ({"lambda": f"{lam:g}"} if len({k[0] for k in by}) > 1 else {})
                     | {"JD vs guide": ci("jd", 3), "FAD vs flute": ci("fad", 1), "F1 vs MIDI": ci("f1_midi", 3)})
    lams = sorted({k[0] for k in by})
    _print_rows(table, "sweep-t-init" + (f" (lambda {lams[0]:g})" if len(lams) == 1 else "")
                + ": violin -> flute on held-out chorales (95 % bootstrap CI)")
    for lam_value in lams:
        note = fad_trend({t: m["fad"]["mean"] for (lm, t), m in by.items() if lm == lam_value and "fad" in m})
        if note:
            console.print(f"[yellow]{note}[/yellow]" if note.startswith("FAD does not") else note)
    for lam_label, rec in s["recommended"].items():
        console.print(f"[bold]recommended tau_init (lambda={lam_label}): {rec.get('t_init')}[/bold] "
                      f"(JD {rec['jd']:.3f}, FAD {rec['fad']:.2f}; {rec['rule']})")
    console.print(f"report:    {s['report_url']}\nplot:      {s['plot_url']}\nmetrics:   {url}")
    console.print(f"MLflow UI: mlflow ui --backend-store-uri {tracking_uri()}  (then open http://127.0.0.1:5000)")


def main() -> None:
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
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
            _fail(err)
        except typer.Exit:
            sys.exit(1)


if __name__ == "__main__":
    main()
