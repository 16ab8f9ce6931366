"""A transform run's whole recordings: one output file per source recording, named after it.

Runs after the run's clips are transformed and committed. A recording is written once every clip
ingestion kept of it has an output; one whose clip failed gets a quarantine row naming the clip.
Each file is streamed (tasks/recordings.stitch: one clip in memory at a time) to a temp file and
placed atomically, then its row is committed: a re-run skips recordings already in the table, and
a crash between the file and its row rewrites the same bytes (per-clip seeds)."""
from __future__ import annotations

import hashlib
import posixpath
from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import soundfile as sf

from infra.datasets import ShardBuffer, ShardedDataset
from infra.progress import progress
from infra.storage import Storage
from schemas.configs import config_hash
from schemas.records import RunLayout
from schemas.transform import TransformConfig, WholeOutputs
from tasks.audio import decode_audio_bytes
from tasks.errors import clean_reason
from tasks.ingest import AUDIO_EXTS, MIDI_EXTS
from tasks.recordings import ClipSpan, clip_gains_db, output_name, stitch, write_stream

OUTPUT_LUFS, OUTPUT_PEAK_DBFS = -23.0, -1.0     # as the clip outputs (ray_actors/transform)
COMMIT_EVERY = 8                                # recordings per committed shard
FILE_EXTS = AUDIO_EXTS + MIDI_EXTS


def is_recording(source_uri: str | None) -> bool:
    """A source that is a file a user gave (an ingested folder or prefix), not a corpus render."""
    return bool(source_uri) and source_uri.lower().endswith(FILE_EXTS)


def source_info(source_uri: str) -> tuple[int, int, int] | None:
    """(frames, sample rate, channels) of an audio source, from its header; None for MIDI or a
    source that is gone (its length is then its clips' end)."""
    if not source_uri.lower().endswith(AUDIO_EXTS):
        return None
    folder, name = posixpath.split(source_uri)
    try:
        with Storage(folder).open_read(name) as f:
            i = sf.info(f)
        return int(i.frames), int(i.samplerate), int(i.channels)
    except (OSError, RuntimeError, ValueError):
        return None


EXCERPT_S = 30.0  # what pages and MLflow show of a recording: its first half-minute (the files are whole)


def excerpt(uri: str, seconds: float = EXCERPT_S) -> tuple[np.ndarray, int]:
    """The first `seconds` of an audio file, mono, read as a stream (never the whole file)."""
    folder, name = posixpath.split(uri)
    with Storage(folder).open_read(name) as f, sf.SoundFile(f) as snd:
        return snd.read(int(seconds * snd.samplerate), dtype="float32", always_2d=True).mean(axis=1), snd.samplerate


def no_recordings(url: str | None = None) -> dict:
    """The recordings part of a transform's summary when none were written."""
    return {"recordings": 0, "recordings_written": 0, "recordings_skipped": 0, "recordings_incomplete": 0,
            "recordings_failed": 0, "recordings_url": url}


def _groups(clips: Iterable[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in clips:
        if is_recording(r.get("source_uri")):
            out[r["source_id"]].append(r)
    return out


def write_recordings(run_url: str, run_id: str, clips_url: str, selected: list[dict], cfg: TransformConfig,
                     whole: WholeOutputs, operating_point: str) -> dict:
    """Write the whole recordings of `selected` (clip rows with their `output_key`) that are
    complete. Returns counts and where the files are."""
    run = Storage(run_url)
    table = ShardedDataset(run.child(RunLayout.RECORDING_ROWS), "recordings")
    quarantine = ShardedDataset(run.child(RunLayout.QUARANTINE), "quarantine")
    outputs = ShardedDataset(run.child(RunLayout.OUTPUTS), "outputs")
    groups = _groups(selected)
    summary = no_recordings(run.child(RunLayout.RECORDINGS).url)
    if not groups:
        return summary
    # every clip ingestion kept of each source, selected or not: a recording is whole or not written
    all_clips = defaultdict(set)
    for r in ShardedDataset.at(clips_url, "clips").read(["clip_id", "source_id"]).to_pylist():
        if r["source_id"] in groups:
            all_clips[r["source_id"]].add(r["clip_id"])
    done_rows = {r["source_id"]: r for r in table.read(["source_id", "recording_key", "name"]).to_pylist()} \
        if table.exists() else {}
    out_rows = {r["output_key"]: r for r in outputs.read().to_pylist()} if outputs.exists() else {}
    # a transform's quarantine row names the failed clip output's key in source_id
    failed = {r["source_id"]: r["reason"] for r in quarantine.read(["source_id", "stage", "reason"]).to_pylist()
              if r["stage"] == "transform"} if quarantine.exists() else {}
    names = {r["name"] for r in done_rows.values()}
    stems = defaultdict(set)
    for rows in groups.values():
        stems[posixpath.splitext(rows[0]["piece"])[0]].add(rows[0]["source_id"])
    buf = ShardBuffer(table, cfg.config_hash(), shard_rows=COMMIT_EVERY)
    qbuf = ShardBuffer(quarantine, cfg.config_hash(), shard_rows=COMMIT_EVERY)
    summary["recordings"] = len(groups)
    todo = []
    for sid, rows in sorted(groups.items(), key=lambda kv: kv[1][0]["piece"]):
        if sid in done_rows:
            summary["recordings_skipped"] += 1
        elif {r["clip_id"] for r in rows} != all_clips[sid]:
            summary["recordings_incomplete"] += 1     # a --limit or a split cut it: not whole
        elif bad := [r for r in rows if r["output_key"] in failed]:
            r = min(bad, key=lambda r: r["start_s"])
            qbuf.add({"source_uri": r["source_uri"], "source_id": sid, "stage": "recording",
                      "reason": clean_reason(f"the clip at {r['start_s']:.1f}-{r['start_s'] + r['duration_s']:.1f} s "
                                             f"could not be transformed: {failed[r['output_key']]}"),
                      "detail": run_id, "config_hash": cfg.config_hash()})
            summary["recordings_failed"] += 1
        elif all(r["output_key"] in out_rows for r in rows):
            todo.append((sid, rows))
    for sid, rows in progress(todo, len(todo), "whole recordings"):
        rows = sorted(rows, key=lambda r: r["start_s"])
        rel = rows[0]["piece"]
        first = out_rows[rows[0]["output_key"]]
        target = first["target_domain"] or "out"
        name = output_name(rel, target, whole.format, keep_extension=len(stems[posixpath.splitext(rel)[0]]) > 1)
        if name in names:
            name = output_name(rel, f"{target}-{sid[:8]}", whole.format)
        names.add(name)
        buf.add(_write_one(run, run_id, sid, rows, out_rows, name, cfg, whole, operating_point))
        summary["recordings_written"] += 1
        if buf.entries and not buf.rows:   # a full shard was flushed: commit it now, a crash keeps it
            buf.commit()
    buf.commit()
    qbuf.commit()
    return summary


def _write_one(run: Storage, run_id: str, sid: str, rows: list[dict], out_rows: dict[str, dict], name: str,
               cfg: TransformConfig, whole: WholeOutputs, operating_point: str) -> dict:
    first = out_rows[rows[0]["output_key"]]
    rate = int(first["sample_rate_hz"])
    spans = [ClipSpan(r["output_key"], float(r["start_s"]), float(out_rows[r["output_key"]]["duration_s"]),
                      float(r["loudness_lufs"]) if r.get("loudness_lufs") is not None else OUTPUT_LUFS) for r in rows]
    info = source_info(rows[0]["source_uri"])
    end_s = max(s.start_s + s.duration_s for s in spans)
    frames, src_rate, channels = info if info else (int(round(end_s * rate)), rate, 1)
    total = int(round(frames * rate / src_rate))
    out_rate = src_rate if whole.sample_rate == "source" else rate
    total_out = frames if whole.sample_rate == "source" else total

    def read(key: str):
        y, sr = decode_audio_bytes(run.read_bytes(RunLayout.audio(key)))
        if sr != rate:
            raise ValueError(f"clip output {key} is at {sr} Hz; its recording's other clips are at {rate} Hz")
        return y

    peaks = [float(out_rows[s.output_key].get("peak_dbfs") or OUTPUT_PEAK_DBFS) for s in spans]
    gains = clip_gains_db(spans, peaks, OUTPUT_LUFS, OUTPUT_PEAK_DBFS, OUTPUT_LUFS)
    rel = RunLayout.recording(name)
    h = hashlib.sha256()
    with run.writer(rel) as tmp:
        write_stream(stitch(spans, read, gains, total, rate, whole.crossfade_s), tmp, rate, out_rate,
                     whole.format, total_out)
        with open(tmp, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    c = cfg
    return {"recording_key": config_hash({"clips": [s.output_key for s in spans], "whole": whole.model_dump(),
                                          "name": name}),
            "run_id": run_id, "source_id": sid, "source_uri": rows[0]["source_uri"], "piece": rows[0]["piece"],
            "name": name, "output_uri": run.uri(rel), "sha256": h.hexdigest(), "format": whole.format,
            "sample_rate_hz": out_rate, "duration_s": total_out / out_rate, "source_duration_s": frames / src_rate,
            "source_sample_rate_hz": src_rate, "source_channels": channels, "start_s": 0.0, "clips": len(spans),
            "clip_keys": [s.output_key for s in spans], "target_domain": first["target_domain"],
            "model": first["model"], "source_model": first["source_model"], "vocoder": first["vocoder"],
            # t_init auto: each clip has its own; the recording shows their mean (its clips' rows, each)
            "method": c.method, "task": c.task, "sigma_start": first["sigma_start"],
            "t_init": (round(float(np.mean([out_rows[r["output_key"]]["t_init"] for r in rows])), 4) if c.auto
                       else c.warm.t_init),
            "lam": c.warm.lam, "steps": c.sampler.steps, "sampler": c.sampler.name, "seed": c.seed,
            "operating_point": operating_point, "config_hash": c.config_hash()}
