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


AUDIBLE_BAND_HZ = (30.0, 7500.0)
FRAME_S = 0.02
MIN_EVENT_FRAMES = 5  # 100 ms: shorter bursts (clicks, pops) are not musical content


def is_silent(x: np.ndarray, cfg: ClipConfig) -> bool:
    """No audible content, whatever its form. A peak test alone passes a DC offset, infrasound and
    clicks, so a clip is audible only if (1) its level in the audible band (30 Hz - 7.5 kHz, from
    the clip's spectrum, so no filter transient) is above `cfg.silence_dbfs`, and (2) sounds of at
    least 100 ms (runs of 20 ms frames above `cfg.silence_dbfs`, mean removed) cover at least
    `cfg.min_audible_fraction` of it."""
    if x.size == 0 or peak_dbfs(x) < cfg.silence_dbfs:
        return True
    sr = cfg.sample_rate_hz
    power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(x.size, 1.0 / sr)
    in_band = power[(f >= AUDIBLE_BAND_HZ[0]) & (f <= AUDIBLE_BAND_HZ[1])].sum()
    band_rms_db = 10 * np.log10(2 * in_band / x.size ** 2 + 1e-20)  # Parseval: mean square of the band
    if band_rms_db < cfg.silence_dbfs:
        return True
    n = max(1, int(FRAME_S * sr))
    if x.size < n * MIN_EVENT_FRAMES:
        return False
    frames = x[: x.size // n * n].reshape(-1, n).astype(np.float64)
    frames = frames - frames.mean(axis=1, keepdims=True)
    above = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-20) > cfg.silence_dbfs
    # frames inside a run of >= MIN_EVENT_FRAMES loud frames
    full = np.convolve(above.astype(int), np.ones(MIN_EVENT_FRAMES, int), "valid") == MIN_EVENT_FRAMES
    covered = np.convolve(full.astype(int), np.ones(MIN_EVENT_FRAMES, int), "full") > 0
    return float(np.mean(covered)) < cfg.min_audible_fraction


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
