"""Turning mono audio into clip rows: one helper for corpus, ingestion and augmentation."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from schemas.configs import ClipConfig
from tasks.audio import clip_spans, encode_flac, normalise_loudness, peak_dbfs

# Columns a clip row must have; everything else defaults to null.
CLIP_DEFAULTS: dict = {
    "parent_id": None, "clean_id": None, "instrument": None, "gm_program": None,
    "soundfont": None, "piece": None, "voice": None, "pitch_shift_semitones": 0,
    "degradation": None, "out_of_range_notes": None, "midi": None,
}


def is_silent(x: np.ndarray, cfg: ClipConfig) -> bool:
    return x.size == 0 or peak_dbfs(x) < cfg.silence_dbfs


def clip_row(audio: np.ndarray, cfg: ClipConfig, *, clip_id: str, start_s: float,
             config_hash: str, **meta) -> dict:
    """Loudness-normalise and encode one clip; `meta` fills the other `clips` columns."""
    sr = cfg.sample_rate_hz
    y, gain_db, lufs = normalise_loudness(audio, sr, cfg.target_lufs, cfg.peak_ceiling_dbfs)
    row = dict(CLIP_DEFAULTS)
    row.update(meta)
    row.update(clip_id=clip_id, start_s=float(start_s), duration_s=y.size / sr,
               sample_rate_hz=sr, num_samples=int(y.size), gain_db=gain_db, loudness_lufs=lufs,
               audio_flac=encode_flac(y, sr), config_hash=config_hash)
    return row


def spans_of(num_samples: int, cfg: ClipConfig) -> Iterator[tuple[int, int]]:
    clip, hop = clip_and_hop_samples(cfg)
    return iter(clip_spans(num_samples, clip, hop))


def clip_and_hop_samples(cfg: ClipConfig) -> tuple[int, int]:
    clip = int(round(cfg.clip_s * cfg.sample_rate_hz))
    return clip, clip - int(round(cfg.overlap_s * cfg.sample_rate_hz))
