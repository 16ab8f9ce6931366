"""Pitch augmentation. MIDI-backed clips (corpus renders, MIDI guides) are transposed in the
MIDI and re-rendered with the same synth: exact pitch, natural timbre for the new register.
Audio-only clips use librosa's phase vocoder + soxr resampling (`librosa.effects.pitch_shift`):
no extra dependency and any shift, at the cost of phasiness, smeared transients and shifted
formants that grow with |shift| (a ±12 shift is audibly "chipmunk"/"slowed")."""
from __future__ import annotations

import io
from dataclasses import dataclass

import librosa
import pretty_midi

from schemas.configs import AugmentConfig
from tasks.audio import decode_audio_bytes
from tasks.clips import clip_row
from tasks.ids import content_id
from tasks.midi import midi_bytes, render, with_program


def _synth(row: dict) -> str | None:
    """The synth that rendered a MIDI-backed clip, or None for audio-only clips."""
    if not row["midi"]:
        return None
    return row["soundfont"] or ("sine" if row["role"] == "midi_guide" and row["instrument"] == "sine" else None)


def augment_id(row: dict, semitones: int, cfg: AugmentConfig) -> str:
    method = f"midi_rerender:{_synth(row)}" if _synth(row) else cfg.audio_shifter
    return content_id("augment", row["clip_id"], semitones, method, cfg.config_hash())


def shift_clip(row: dict, semitones: int, cfg: AugmentConfig) -> dict:
    """The augmented copy of one clip row; keeps its parent ID and records the shift."""
    x, sr = decode_audio_bytes(row["audio_flac"])
    clip_cfg = cfg.clip.model_copy(update={"sample_rate_hz": sr})
    synth = _synth(row)
    new_midi = None
    if synth:
        pm = pretty_midi.PrettyMIDI(io.BytesIO(row["midi"]))
        program = row["gm_program"] if row["gm_program"] is not None else 0
        shifted = with_program(pm, program, semitones)
        y = render(shifted, sr, synth, tail_s=0.0)[: x.size]
        if y.size < x.size:
            y = librosa.util.fix_length(y, size=x.size)
        new_midi = midi_bytes(shifted)
    else:
        y = librosa.effects.pitch_shift(x, sr=sr, n_steps=semitones, res_type="soxr_hq")
    meta = {k: row[k] for k in ("role", "domain", "instrument", "gm_program", "soundfont", "piece",
                                "voice", "split", "source_uri", "out_of_range_notes")}
    return clip_row(y, clip_cfg, clip_id=augment_id(row, semitones, cfg),
                    start_s=row["start_s"], config_hash=cfg.config_hash(), parent_id=row["clip_id"],
                    source_id=content_id("shifted", row["source_id"], semitones),
                    pitch_shift_semitones=semitones, midi=new_midi,
                    degradation=row["degradation"], clean_id=row["clean_id"], **meta)


@dataclass
class AugmentResult:
    clips_added: int
    clips_skipped: int
    out_url: str


def run_augment(clips_url: str, out_url: str, cfg: AugmentConfig, shard_rows: int = 256) -> AugmentResult:
    """Augment the selected clips of `clips_url` into the clips dataset at `out_url`;
    clips already augmented there (same parent, shift and config) are skipped."""
    from infra.datasets import ShardBuffer, ShardedDataset
    from infra.progress import progress

    from tasks.metrics.sources import is_clips_dataset

    if not is_clips_dataset(clips_url):  # a typo would otherwise "augment" nothing and succeed
        raise ValueError(f"{clips_url} is not a clips dataset; expected the clips folder written by "
                         "`reinstrument ingest` or `corpus build`")
    src = ShardedDataset.at(clips_url, "clips")
    buf = ShardBuffer(ShardedDataset.at(out_url, "clips"), cfg.config_hash(), shard_rows)
    have = buf.dataset.column_values("clip_id")
    added = skipped = 0
    entries = src.manifest().shards
    for entry in progress(entries, len(entries), "augment shards"):
        table = src.read_shard(entry)
        for row in table.to_pylist():
            if row["role"] not in cfg.roles or row["split"] not in cfg.splits or row["pitch_shift_semitones"]:
                continue
            for s in cfg.shifts_semitones:
                if augment_id(row, s, cfg) in have:
                    skipped += 1
                    continue
                out = shift_clip(row, s, cfg)
                buf.add(out)
                have.add(out["clip_id"])
                added += 1
    buf.commit()
    return AugmentResult(added, skipped, buf.dataset.url)
