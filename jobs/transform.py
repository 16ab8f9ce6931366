"""`reinstrument transform`: a corpus into a target domain, on Ray actors, exactly once.

A run lives under <out_url>/runs/<run_id>/ (schemas/records.RunLayout): audio/<output_key>.flac,
outputs/ (the `outputs` table), quarantine/ (clips that could not be transformed, with the
reason), inputs/ (when the inputs were a plain folder: its ingestion), run.json (config, pinned
models, MLflow run). The run ID defaults to a hash of what defines the job, so re-running a job
resumes it."""
from __future__ import annotations

import io
import json
import posixpath
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow.parquet as pq

from infra import tracking
from infra.datasets import ShardedDataset
from infra.progress import progress
from infra.shipped import probe_bytes
from infra.storage import Storage
from jobs.decoders import pin_decoder, pinned_metadata, resolve_vocoder
from jobs.recordings import EXCERPT_S, excerpt, no_recordings, write_recordings
from tasks.audio import encode_flac
from jobs.steps import Step, inline
from ray_actors.transform import commit_batch, pending_inputs, run_batches
from schemas.configs import IngestConfig, config_hash
from schemas.records import PinnedModels, RunLayout, TransformRecord
from schemas.results import TransformResult
from schemas.transform import TASK_ROLES, InputSelection, TransformConfig, TransformLogistics, WholeOutputs
from tasks.ingest import run_ingest
from tasks.metrics.sources import clip_matches, is_clips_dataset

CLIP_COLUMNS = ["clip_id", "clean_id", "domain", "role", "split", "piece", "audio_flac", "duration_s", "source_id",
                "source_uri", "start_s", "loudness_lufs"]
SUMMARY_METRICS = ("selected", "skipped", "transformed", "failed", "wall_s", "audio_s", "realtime_factor",
                   "first_batch_s", "steady_realtime_factor", "recordings_written")


def _denoiser(uri: str, name: str) -> tuple[str, str]:
    """Refused here, before inputs are read, a run is made or a worker starts: a model of another kind."""
    kind = pinned_metadata(uri).get("kind", "denoiser")
    if kind != "denoiser":
        raise ValueError(f"{name} is not a denoiser but a {kind} model; expected a denoiser (`reinstrument train`)")
    return uri, name


def pin_models(cfg: TransformConfig) -> PinnedModels:
    """Every registry URI of the run resolved to a version now (target, DDIB source, vocoder)."""
    uri, name = _denoiser(*tracking.resolve_model(cfg.model))
    pinned = {"model_uri": uri, "model": name}
    if cfg.source_model:
        pinned |= dict(zip(("source_uri", "source_model"), _denoiser(*tracking.resolve_model(cfg.source_model))))
    vocoder_uri, vocoder = resolve_vocoder(cfg.vocoder)
    if vocoder_uri:
        pinned |= {"vocoder_uri": vocoder_uri, "vocoder": vocoder}
    if cfg.auto_rule() == "probe":  # the probe's file pinned by its checksum: a run never mixes two probes
        pinned["probe_uri"] = probe_bytes(cfg.auto.probe)[0]
    return PinnedModels(**pinned | pin_decoder(cfg.decoder, uri, name))


def select_clips(clips_url: str, selection: InputSelection, task_name: str, ingested: bool,
                 columns: list[str] = CLIP_COLUMNS) -> list[dict]:
    """Rows of the clips to transform, sorted by clip ID (a folder's ingestion is taken whole)."""
    role = None if ingested else (selection.role or TASK_ROLES[task_name])
    ds = ShardedDataset.at(clips_url, "clips")
    if selection.commits:
        tables = [ds.read_shard(e, columns) for e in ds.commit_shards(selection.commits)]
        rows_all = list({r["clip_id"]: r for t in tables for r in t.to_pylist()}.values())
    else:
        rows_all = ds.read(columns).to_pylist()
    rows = [r for r in rows_all if clip_matches(r, selection.domain, role, selection.split)]
    seen = pieces_of(selection.exclude_pieces_of)
    held_out = [r for r in rows if r["piece"] not in seen] if seen else rows
    held_out.sort(key=lambda r: r["clip_id"])
    if not held_out:
        why = (f" outside the {len(seen)} pieces of {', '.join(selection.exclude_pieces_of)} ({len(rows)} match but are "
               "pieces those datasets hold)" if rows else "")
        raise ValueError(f"no clips in {clips_url} match domain={selection.domain} role={role} split={selection.split}{why}")
    rows = held_out
    return rows[:selection.limit]


def pieces_of(clips_urls: tuple[str, ...]) -> set[str]:
    """Every piece any of these clips datasets holds (a clip without a piece, e.g. an ingested
    file, is its own source and names none)."""
    out: set[str] = set()
    for url in clips_urls:
        if not is_clips_dataset(url):
            raise ValueError(f"exclude_pieces_of: {url} is not a clips dataset (expected the clips folder of a corpus "
                             "or an ingestion)")
        out |= {p for p in ShardedDataset.at(url, "clips").read(["piece"]).column("piece").to_pylist() if p}
    return out


def check_selection(clips_url: str, selection: InputSelection, task_name: str, ingested: bool) -> None:
    """Raise now if the selection matches no clip (metadata only: no audio is read)."""
    select_clips(clips_url, selection, task_name, ingested, [c for c in CLIP_COLUMNS if c != "audio_flac"])


@dataclass(frozen=True)
class PreparedRun:
    record: TransformRecord
    run_url: str
    ingested: bool          # the inputs were a plain folder, ingested into the run
    created: bool           # this invocation created the run (so a failure may remove it)


def prepare(inputs: str, selection: InputSelection, cfg: TransformConfig, logistics: TransformLogistics,
            whole: WholeOutputs | None = None) -> PreparedRun:
    pinned = pin_models(cfg)
    identity = {"inputs": Storage(inputs).absolute_url(), "selection": selection.identity(),
                "pinned": pinned.model_dump(exclude_none=True), "config": cfg.identity()}
    if whole is not None and whole.identity():   # another format or rate: another run (its files differ)
        identity["whole"] = whole.identity()
    run_id = logistics.run_id or "tr-" + config_hash(identity)
    run = Storage(Storage(logistics.out_url).absolute_url()).child(RunLayout.folder(run_id))
    ingested = not is_clips_dataset(inputs)
    clips_url = inputs
    if ingested:  # a plain folder or prefix of audio/MIDI: ingest it into the run first
        ing = IngestConfig(midi_soundfont="sine") if cfg.task == "midi2real" else IngestConfig()
        # absolute, so every row names its source as any process (and a later reader) finds it
        clips_url = run_ingest(Storage(inputs).absolute_url(), run.child(RunLayout.INPUTS).url, ing).clips_url
    # Validated before the run is created: a selection that matches nothing leaves no run behind.
    try:
        check_selection(clips_url, selection, cfg.task, ingested)
    except ValueError:
        if not run.exists(RunLayout.RECORD):
            run.delete("")  # this invocation's ingestion of a plain folder, if any
        raise
    if run.exists(RunLayout.RECORD):
        record = TransformRecord.model_validate_json(run.read_bytes(RunLayout.RECORD))
        return PreparedRun(record, run.url, ingested, created=False)
    tags = {"reinstrument.kind": "transform", "reinstrument.run_folder": run.url}
    tracked = tracking.TrackedRun.start(logistics.experiment, run_id, tags=tags, parent=logistics.parent_run_id)
    tracked.params(cfg.model_dump(mode="json") | pinned.model_dump(exclude_none=True)
                   | {"inputs": inputs, "selection": selection.model_dump_json()})
    record = TransformRecord(run_id=run_id, mlflow_run_id=tracked.id, pinned=pinned, inputs=inputs, clips_url=clips_url,
                             config=cfg.model_dump(mode="json"), selection=selection.model_dump())
    run.write_bytes(RunLayout.RECORD, record.model_dump_json(indent=2, exclude_none=True).encode())
    return PreparedRun(record, run.url, ingested, created=True)


def transform(p: PreparedRun, selection: InputSelection, cfg: TransformConfig, logistics: TransformLogistics,
              whole: WholeOutputs | None = None) -> dict:
    run, rec = Storage(p.run_url), p.record
    outputs = ShardedDataset(run.child(RunLayout.OUTPUTS), "outputs")
    quarantine = ShardedDataset(run.child(RunLayout.QUARANTINE), "quarantine")
    clips = select_clips(rec.clips_url, selection, cfg.task, p.ingested)
    done = outputs.column_values("output_key") if outputs.exists() else set()
    pinned = rec.pinned.model_dump(exclude_none=True)
    pending = pending_inputs(clips, cfg, pinned, done)
    print(f"[transform] {len(clips)} clips selected; {len(clips) - len(pending)} already transformed "
          f"(skipped); {len(pending)} to do on {logistics.num_actors or 'no'} actor(s)")
    t0 = time.perf_counter()
    ok = failed = 0
    audio_s = first_audio_s = 0.0
    first_s = None
    if pending:
        batches = run_batches(pending, cfg, logistics, pinned, run.url, rec.run_id)
        n_batches = (len(pending) + logistics.clips_per_task - 1) // logistics.clips_per_task
        for batch in progress(batches, n_batches, "transform batches"):
            g, b = commit_batch(outputs, quarantine, batch, cfg.config_hash(), rec.run_id)
            ok, failed = ok + g, failed + b
            audio_s += sum(json.loads(r)["duration_s"] for r in batch["row"] if r)
            if first_s is None:  # start-up (Ray, actors, model loading) ends with the first batch
                first_s, first_audio_s = time.perf_counter() - t0, audio_s
    recordings = no_recordings()
    if whole is not None:
        recordings = write_recordings(run.url, rec.run_id, rec.clips_url, clips, cfg, whole, logistics.operating_point)
        if recordings["recordings"]:
            print(f"[transform] whole recordings: {recordings['recordings_written']} written, "
                  f"{recordings['recordings_skipped']} already there, {recordings['recordings_failed']} failed "
                  f"(quarantine), {recordings['recordings_incomplete']} not whole in this selection -> "
                  f"{recordings['recordings_url']}")
    wall = time.perf_counter() - t0
    steady = (audio_s - first_audio_s) / (wall - first_s) if first_s is not None and wall > first_s else None
    return recordings | {"run_id": rec.run_id, "run_url": run.url, "outputs_url": outputs.url, "clips_url": rec.clips_url,
            "selected": len(clips), "skipped": len(clips) - len(pending), "transformed": ok, "failed": failed,
            "wall_s": wall, "audio_s": audio_s, "realtime_factor": audio_s / wall if wall > 0 and audio_s else None,
            "first_batch_s": first_s, "steady_realtime_factor": steady}


def log_run(p: PreparedRun, summary: dict, logistics: TransformLogistics) -> TransformResult:
    tracked = tracking.TrackedRun(p.record.mlflow_run_id)
    tracked.metrics({k: summary[k] for k in SUMMARY_METRICS})
    run = Storage(p.run_url)
    recordings = ShardedDataset(run.child(RunLayout.RECORDING_ROWS), "recordings")
    if recordings.exists():
        buf = io.BytesIO()
        rec_table = recordings.read()
        pq.write_table(rec_table, buf)
        tracked.artifact("recordings.parquet", buf.getvalue())
        for row in rec_table.slice(0, logistics.audio_examples).to_pylist():  # excerpts: a file may be hours long
            tracked.artifact(posixpath.basename(row["name"]), encode_flac(*excerpt(row["output_uri"])),
                             f"recordings (first {EXCERPT_S:.0f} s)")
    table = ShardedDataset.at(summary["outputs_url"], "outputs").read()
    buf = io.BytesIO()
    pq.write_table(table, buf)
    tracked.artifact("outputs.parquet", buf.getvalue())
    for row in table.slice(0, logistics.audio_examples).to_pylist():
        tracked.artifact(f"{row['clip_id'][:12]}-{row['output_key'][:8]}.flac", run.read_bytes(RunLayout.audio(row["output_key"])),
                         "audio_examples")
    tracked.finish()
    return TransformResult(**summary, mlflow_run_id=tracked.id, outputs=table.num_rows)


@contextmanager
def _cleanup_on_error(p: PreparedRun) -> Iterator[None]:
    """A run this invocation created and that failed before committing any output is removed
    (its MLflow run ends FAILED): a failed command leaves no debris. A run with committed outputs
    stays, so a re-run resumes it."""
    with tracking.TrackedRun(p.record.mlflow_run_id).failed_on_error():
        try:
            yield
        except BaseException:
            run = Storage(p.run_url)
            if p.created and not ShardedDataset(run.child(RunLayout.OUTPUTS), "outputs").exists():
                run.delete("")
            raise


def transform_job(inputs: str, selection: InputSelection, cfg: TransformConfig, logistics: TransformLogistics,
                  *, whole: WholeOutputs | None = None, step: Step = inline) -> TransformResult:
    """Transform INPUTS (a clips dataset, or a folder/S3 prefix of audio or MIDI) with the model;
    with `whole`, each source recording also comes back as one file named after it."""
    p = step(prepare, inputs, selection, cfg, logistics, whole)
    with _cleanup_on_error(p):
        return step(log_run, p, step(transform, p, selection, cfg, logistics, whole), logistics)
