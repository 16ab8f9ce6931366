"""`reinstrument transform`: a corpus into a target domain, on Ray actors, exactly once.

Layout under <out_url>/runs/<run_id>/: audio/<output_key>.flac, outputs/ (the `outputs` table,
manifest last), quarantine/ (clips that could not be transformed, with the reason), inputs/
(when the inputs were a plain folder: its ingestion), run.json (config, pinned models, MLflow
run). The run ID defaults to a hash of what defines the job, so re-running a job resumes it."""
from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow.parquet as pq
from prefect import flow, task

from flows.data import _table_artifact
from infra import tracking
from infra.datasets import ShardedDataset
from infra.progress import progress
from infra.storage import Storage
from ray_actors.transform import commit_batch, pending_inputs, run_batches
from schemas.configs import IngestConfig, config_hash
from schemas.transform import TASK_ROLES, InputSelection, TransformConfig, TransformLogistics
from tasks.ingest import run_ingest
from tasks.metrics.sources import clip_matches, is_clips_dataset

CLIP_COLUMNS = ["clip_id", "clean_id", "domain", "role", "split", "audio_flac", "duration_s"]


def pin_models(cfg: TransformConfig) -> dict[str, str]:
    uri, name = tracking.resolve_model(cfg.model)
    pinned = {"model_uri": uri, "model": name}
    if cfg.source_model:
        s_uri, s_name = tracking.resolve_model(cfg.source_model)
        pinned |= {"source_uri": s_uri, "source_model": s_name}
    return pinned


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
    rows.sort(key=lambda r: r["clip_id"])
    if not rows:
        raise ValueError(f"no clips in {clips_url} match domain={selection.domain} role={role} split={selection.split}")
    return rows[:selection.limit]


def check_selection(clips_url: str, selection: InputSelection, task_name: str, ingested: bool) -> None:
    """Raise now if the selection matches no clip (metadata only: no audio is read)."""
    select_clips(clips_url, selection, task_name, ingested, [c for c in CLIP_COLUMNS if c != "audio_flac"])


@task(name="prepare-transform")
def prepare(inputs: str, selection: InputSelection, cfg: TransformConfig, logistics: TransformLogistics) -> dict:
    pinned = pin_models(cfg)
    run_id = logistics.run_id or "tr-" + config_hash({"inputs": Storage(inputs).absolute_url(),
                                                      "selection": selection.model_dump(), "pinned": pinned,
                                                      "config": cfg.model_dump(mode="json")})
    run = Storage(Storage(logistics.out_url).absolute_url()).child(f"runs/{run_id}")
    ingested = not is_clips_dataset(inputs)
    clips_url = inputs
    if ingested:  # a plain folder or prefix of audio/MIDI: ingest it into the run first
        ing = IngestConfig(midi_soundfont="sine") if cfg.task == "midi2real" else IngestConfig()
        clips_url = run_ingest(inputs, run.child("inputs").url, ing).clips_url
    # Validated before the run is created: a selection that matches nothing leaves no run behind.
    try:
        check_selection(clips_url, selection, cfg.task, ingested)
    except ValueError:
        if not run.exists("run.json"):
            run.delete("")  # this invocation's ingestion of a plain folder, if any
        raise
    meta = json.loads(run.read_bytes("run.json")) if run.exists("run.json") else {}
    created = "mlflow_run_id" not in meta
    if created:
        c = tracking.client()
        tags = {"reinstrument.kind": "transform", "reinstrument.run_folder": run.url}
        if logistics.parent_run_id:
            tags["mlflow.parentRunId"] = logistics.parent_run_id
        r = c.create_run(tracking.experiment_id(logistics.experiment), run_name=run_id, tags=tags)
        for k, v in (tracking.flatten(cfg.model_dump(mode="json")) | pinned |
                     {"inputs": inputs, "selection": selection.model_dump_json()}).items():
            c.log_param(r.info.run_id, k, str(v)[:6000])
        meta = {"run_id": run_id, "mlflow_run_id": r.info.run_id, "pinned": pinned, "inputs": inputs,
                "clips_url": clips_url, "config": cfg.model_dump(mode="json"), "selection": selection.model_dump()}
        run.write_bytes("run.json", json.dumps(meta, indent=2).encode())
    return meta | {"run_url": run.url, "ingested": ingested, "clips_url": clips_url, "created": created}


@task(name="transform-clips")
def transform_task(meta: dict, selection: InputSelection, cfg: TransformConfig, logistics: TransformLogistics) -> dict:
    run = Storage(meta["run_url"])
    outputs = ShardedDataset(run.child("outputs"), "outputs")
    quarantine = ShardedDataset(run.child("quarantine"), "quarantine")
    clips = select_clips(meta["clips_url"], selection, cfg.task, meta["ingested"])
    done = outputs.column_values("output_key") if outputs.exists() else set()
    pending = pending_inputs(clips, cfg, meta["pinned"], done)
    print(f"[transform] {len(clips)} clips selected; {len(clips) - len(pending)} already transformed "
          f"(skipped); {len(pending)} to do on {logistics.num_actors or 'no'} actor(s)")
    t0 = time.perf_counter()
    ok = failed = 0
    audio_s = first_audio_s = 0.0
    first_s = None
    if pending:
        batches = run_batches(pending, cfg, logistics, meta["pinned"], run.url, meta["run_id"])
        n_batches = (len(pending) + logistics.clips_per_task - 1) // logistics.clips_per_task
        for batch in progress(batches, n_batches, "transform batches"):
            g, b = commit_batch(outputs, quarantine, batch, cfg.config_hash(), meta["run_id"])
            ok, failed = ok + g, failed + b
            audio_s += sum(json.loads(r)["duration_s"] for r in batch["row"] if r)
            if first_s is None:  # start-up (Ray, actors, model loading) ends with the first batch
                first_s, first_audio_s = time.perf_counter() - t0, audio_s
    wall = time.perf_counter() - t0
    steady = (audio_s - first_audio_s) / (wall - first_s) if first_s is not None and wall > first_s else None
    return {"run_id": meta["run_id"], "run_url": run.url, "outputs_url": outputs.url, "clips_url": meta["clips_url"],
            "selected": len(clips),
            "skipped": len(clips) - len(pending), "transformed": ok, "failed": failed, "wall_s": wall,
            "audio_s": audio_s, "realtime_factor": audio_s / wall if wall > 0 and audio_s else None,
            "first_batch_s": first_s, "steady_realtime_factor": steady}


@task(name="log-transform")
def finalise(meta: dict, summary: dict, logistics: TransformLogistics) -> dict:
    c = tracking.client()
    rid = meta["mlflow_run_id"]
    for k in ("selected", "skipped", "transformed", "failed", "wall_s", "audio_s", "realtime_factor",
              "first_batch_s", "steady_realtime_factor"):
        if summary[k] is not None:
            c.log_metric(rid, k, float(summary[k]))
    table = ShardedDataset.at(summary["outputs_url"], "outputs").read()
    run = Storage(meta["run_url"])
    with tempfile.TemporaryDirectory() as tmp:
        pq.write_table(table, os.path.join(tmp, "outputs.parquet"))
        c.log_artifact(rid, os.path.join(tmp, "outputs.parquet"))
        for row in table.slice(0, logistics.audio_examples).to_pylist():
            path = os.path.join(tmp, f"{row['clip_id'][:12]}-{row['output_key'][:8]}.flac")
            with open(path, "wb") as f:
                f.write(run.read_bytes(f"audio/{row['output_key']}.flac"))
            c.log_artifact(rid, path, "audio_examples")
    c.set_terminated(rid)
    return summary | {"mlflow_run_id": rid, "outputs": table.num_rows}


@contextmanager
def _cleanup_on_error(meta: dict) -> Iterator[None]:
    """A run this invocation created and that failed before committing any output is removed
    (its MLflow run ends FAILED): a failed command leaves no debris. A run with committed outputs
    stays, so a re-run resumes it."""
    with tracking.ends_failed_on_error(meta["mlflow_run_id"]):
        try:
            yield
        except BaseException:
            run = Storage(meta["run_url"])
            if meta.get("created") and not ShardedDataset(run.child("outputs"), "outputs").exists():
                run.delete("")
            raise


def transform_corpus(inputs: str, selection: InputSelection, cfg: TransformConfig,
                     logistics: TransformLogistics) -> dict:
    meta = prepare.fn(inputs, selection, cfg, logistics)
    with _cleanup_on_error(meta):
        return finalise.fn(meta, transform_task.fn(meta, selection, cfg, logistics), logistics)


@flow(name="transform", log_prints=True)
def transform_flow(inputs: str, selection: InputSelection, cfg: TransformConfig, logistics: TransformLogistics) -> dict:
    """Transform INPUTS (a clips dataset, or a folder/S3 prefix of audio or MIDI) with the model."""
    meta = prepare(inputs, selection, cfg, logistics)
    with _cleanup_on_error(meta):
        result = finalise(meta, transform_task(meta, selection, cfg, logistics), logistics)
    _table_artifact("transform-summary", [result], f"transform run {meta['run_id']}")
    return result

