"""Ingestion of a folder or S3 prefix of audio and MIDI into a `clips` table.

Each source file is decoded lazily (soundfile blocks + a soxr stream), so memory stays bounded
by one clip whatever the file length; its clips are kept (compressed) until the whole file has
passed validation, so a file is either fully ingested or quarantined, never half."""
from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from infra.storage import PathEscapeError, Storage, safe_relpath
from schemas.configs import IngestConfig
from tasks.audio import AudioError, stream_clips, stream_mono
from tasks.clips import clip_and_hop_samples, clip_row, is_silent
from tasks.errors import clean_reason
from tasks.ids import content_id, split_for
from tasks.midi import MidiError, count_out_of_range, midi_bytes, parse_midi, playable_range, render, slice_midi

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3")
MIDI_EXTS = (".mid", ".midi")
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


class QuarantineError(ValueError):
    """Raised for one source; becomes one quarantine row."""


@dataclass(frozen=True)
class SourceFile:
    rel: str                    # path relative to SRC (validated: never escapes it)
    domain: str
    split: str | None = None    # from a sidecar; else by hash of the path
    midi_rel: str | None = None  # a paired MIDI (same stem) for an audio file


def quarantine_row(source_uri: str, reason: str, config_hash: str, source_id: str = "",
                   stage: str = "ingest", detail: str = "") -> dict:
    return dict(source_uri=source_uri, source_id=source_id, stage=stage, reason=clean_reason(reason),
                detail=detail, config_hash=config_hash)


def read_sidecar(storage: Storage, rel: str) -> list[dict]:
    """A CSV or Parquet table with columns path, domain[, split]."""
    data = storage.read_bytes(rel)
    if rel.endswith(".parquet"):
        rows = pq.read_table(io.BytesIO(data)).to_pylist()
    else:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    if not rows:
        raise ValueError(f"sidecar {rel} has no rows; expected columns path, domain[, split]")
    if not {"path", "domain"} <= set(rows[0]):
        raise ValueError(f"sidecar {rel} has columns {sorted(rows[0])}; expected path, domain[, split]")
    return rows


def _label(domain: object) -> str:
    """A domain label: a plain non-empty name. None and "" are refused, never turned into "None"."""
    if domain is None or not str(domain).strip():
        raise QuarantineError("empty domain label; expected a plain name such as 'flute'")
    if not LABEL_RE.match(str(domain)):
        raise QuarantineError(f"domain label {domain!r} is not a plain name; expected [A-Za-z0-9_.+-]")
    return str(domain)


def discover(storage: Storage, cfg: IngestConfig, sidecar: list[dict] | None = None,
             ) -> tuple[list[SourceFile], list[tuple[str, str]]]:
    """Sources under the root and (source, reason) pairs for those refused before decoding."""
    files = [f for f in storage.find() if f.lower().endswith(cfg.extensions)]
    stems = {os.path.splitext(f)[0]: f for f in files if f.lower().endswith(MIDI_EXTS)}
    refused: list[tuple[str, str]] = []
    if sidecar is not None:
        entries = []
        for row in sidecar:
            try:
                rel = safe_relpath(str(row["path"]))
                entries.append((rel, _label(row["domain"]), row.get("split") or None))
            except (PathEscapeError, QuarantineError) as e:
                refused.append((str(row.get("path")), str(e)))
    else:
        pattern = re.compile(cfg.domain_pattern)
        entries = []
        for rel in files:
            m = pattern.search(rel)
            dom = m.group("domain") if m and "domain" in m.groupdict() else cfg.default_domain
            try:
                entries.append((rel, _label(dom), None))
            except QuarantineError as e:
                refused.append((rel, str(e)))
    inside = []
    for rel, dom, split in entries:
        if storage.escapes_root(rel):
            refused.append((rel, "a symbolic link that resolves outside SRC; expected files inside SRC"))
        else:
            inside.append((rel, dom, split))
    entries = inside
    audio_stems = {os.path.splitext(r)[0] for r, _, _ in entries if r.lower().endswith(AUDIO_EXTS)}
    out = []
    for rel, dom, split in entries:
        stem = os.path.splitext(rel)[0]
        if rel.lower().endswith(MIDI_EXTS) and stem in audio_stems:
            continue  # used as the ground truth of its audio file instead
        pair = stems.get(stem) if rel.lower().endswith(AUDIO_EXTS) else None
        out.append(SourceFile(rel, dom, split, pair))
    return out, refused


def source_id(storage: Storage, src: SourceFile, config_hash: str) -> str:
    """(content, label): the same bytes under two domains are two sources, one clip set each."""
    return content_id("source", storage.sha256(src.rel), src.domain, config_hash)


def ingest_source(storage: Storage, src: SourceFile, cfg: IngestConfig, sid: str) -> list[dict]:
    """All clip rows of one source, or QuarantineError with the reason."""
    size = storage.size(src.rel)
    if size == 0:
        raise QuarantineError("empty file (0 bytes); expected encoded audio or MIDI")
    if size > cfg.max_file_bytes:
        raise QuarantineError(f"file is {size} bytes; the limit is max_file_bytes={cfg.max_file_bytes}")
    base = dict(source_id=sid, role="clean", domain=src.domain, source_uri=storage.uri(src.rel),
                split=src.split or split_for(src.rel, cfg.split_fractions), piece=src.rel)
    try:
        if src.rel.lower().endswith(MIDI_EXTS):
            pm = parse_midi(storage.read_bytes(src.rel))
            audio = render(pm, cfg.clip.sample_rate_hz, cfg.midi_soundfont)
            blocks: Iterator[np.ndarray] = iter([audio])
            return _clips(blocks, cfg, base, sid, pm, soundfont=cfg.midi_soundfont)
        truth = parse_midi(storage.read_bytes(src.midi_rel)) if src.midi_rel else None
        with storage.open_read(src.rel) as f:
            return _clips(stream_mono(f, cfg.clip.sample_rate_hz), cfg, base, sid, truth)
    except (AudioError, MidiError) as e:
        raise QuarantineError(str(e)) from e


def _clips(blocks: Iterator[np.ndarray], cfg: IngestConfig, base: dict, sid: str, midi,
           soundfont: str | None = None) -> list[dict]:
    c = cfg.clip
    sr = c.sample_rate_hz
    clip_n, hop_n = clip_and_hop_samples(c)
    rows, silent, total = [], 0, 0
    playable = playable_range(base.get("domain"))
    for start, seg in stream_clips(blocks, clip_n, hop_n):
        total = max(total, start + seg.size)
        if is_silent(seg, c):
            silent += 1
            continue
        sliced = slice_midi(midi, start / sr, (start + seg.size) / sr) if midi else None
        rows.append(clip_row(seg, c, clip_id=content_id("clip", sid, start, seg.size),
                             start_s=start / sr, config_hash=cfg.config_hash(),
                             midi=midi_bytes(sliced) if sliced else None,
                             # notes the domain's instrument (or the pitch scorer) cannot play: counted,
                             # as the corpus counts them, so a user can filter such clips out
                             out_of_range_notes=count_out_of_range(sliced, playable) if sliced else None,
                             soundfont=soundfont, **base))
    if total < c.min_clip_s * sr:
        raise QuarantineError(f"too short: {total / sr:.3f} s; expected at least min_clip_s={c.min_clip_s} s")
    if not rows:
        raise QuarantineError(f"no audible content: every clip is silent, a DC offset, infrasound or sparse clicks "
                              f"(peak or 30 Hz-7.5 kHz level below {c.silence_dbfs} dBFS); expected audible audio")
    return rows


@dataclass
class IngestResult:
    sources_seen: int
    sources_skipped: int        # already ingested or quarantined by an earlier run
    clips_added: int
    quarantined: int
    clips_url: str
    quarantine_url: str


def run_ingest(src_url: str, dest_url: str, cfg: IngestConfig, sidecar_url: str | None = None,
               shard_rows: int = 256) -> IngestResult:
    """Ingest new sources under `src_url` into `dest_url`/clips (+ /quarantine).
    A re-run adds nothing and rewrites nothing: a source's ID is its content hash + config."""
    from infra.datasets import ShardBuffer, ShardedDataset
    from infra.progress import progress

    src = Storage(src_url)
    if not src.exists(""):
        raise FileNotFoundError(f"SRC {src_url} does not exist; expected a folder or s3:// prefix of audio/MIDI")
    dest = Storage(dest_url)
    h = cfg.config_hash()
    clips = ShardBuffer(ShardedDataset(dest.child("clips"), "clips"), h, shard_rows)
    quar = ShardBuffer(ShardedDataset(dest.child("quarantine"), "quarantine"), h, shard_rows)
    done = (clips.dataset.column_values("source_id") | quar.dataset.column_values("source_id")
            | quar.dataset.column_values("source_uri"))
    sidecar = None
    if sidecar_url:
        side = Storage(os.path.dirname(sidecar_url.rstrip("/")))
        sidecar = read_sidecar(side, os.path.basename(sidecar_url.rstrip("/")))
    sources, refused = discover(src, cfg, sidecar)
    skipped = 0
    for rel, reason in refused:
        uri = f"{src.url}/{rel}"
        if uri in done:
            skipped += 1
        else:
            quar.add(quarantine_row(uri, reason, h))
    for s in progress(sources, len(sources), "ingest"):
        try:
            sid = source_id(src, s, h)
        except FileNotFoundError:
            if src.uri(s.rel) not in done:  # quarantined once, not on every re-run
                quar.add(quarantine_row(src.uri(s.rel), "listed in the sidecar but not found under SRC", h))
                done.add(src.uri(s.rel))
            continue
        if sid in done:
            skipped += 1
            continue
        try:
            for row in ingest_source(src, s, cfg, sid):
                clips.add(row)
        except QuarantineError as e:
            quar.add(quarantine_row(src.uri(s.rel), str(e), h, source_id=sid))
        done.add(sid)
    added, n_quar = clips.num_rows, quar.num_rows
    clips.commit()
    quar.commit()
    # every file seen counts once: those refused by name or type (quarantined above) included
    return IngestResult(len(sources) + len(refused), skipped, added, n_quar, clips.dataset.url, quar.dataset.url)
