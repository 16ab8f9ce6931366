"""Whole recordings out of clip outputs (pure code; jobs/recordings.py drives it).

A recording is ingested as overlapping clips (ClipConfig: 10 s, 1 s overlap), each transformed on
its own (so clips run in parallel and a crash loses at most the clips in flight). Its output is
put back together here as a stream, one clip in memory at a time:

- each clip output sits at its span in the source, at the model's sample rate;
- consecutive clips meet in a cross-fade of at most `crossfade_s`, centred in their overlap, whose
  law follows the two renderings' correlation there (`_fade`: equal power when they are
  independent, equal amplitude when they are alike), so the joint neither dips nor swells; the
  end-aligned last clip overlaps its neighbour by more than the hop, and the fade stays short so
  two renderings are never heard together for long;
- a stretch where ingestion kept no clip (silent in the source) is silence, with 10 ms fades on
  the neighbouring edges so no edge clicks;
- every clip output comes loudness-normalised, so each gets back its level in the source
  (`loudness_lufs` of its guide) relative to the recording's, and the whole file is set to the
  recording-level target, lowered so no clip peaks above the ceiling: the output follows the
  source's dynamics instead of levelling every 10 s.
"""
from __future__ import annotations

import math
import posixpath
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from tasks.diffusion.windows import window_starts

EDGE_FADE_S = 0.01
OUTPUT_FORMATS = {"flac": ("FLAC", "PCM_16"), "wav": ("WAV", "PCM_16")}


@dataclass(frozen=True)
class ClipSpan:
    """One transformed clip of a recording: where it sits in the source, and its guide's level."""
    output_key: str
    start_s: float
    duration_s: float
    loudness_lufs: float   # the guide clip's loudness before ingestion normalised it


def output_name(source_rel: str, target: str, fmt: str, keep_extension: bool = False) -> str:
    """`<relative path of the source, without extension>.<target>.<fmt>` (with the source's
    extension kept when two sources of a run share a stem: a.wav and a.flac)."""
    base = source_rel if keep_extension else posixpath.splitext(source_rel)[0]
    return f"{base}.{target}.{fmt}"


def clip_gains_db(spans: Sequence[ClipSpan], peaks_dbfs: Sequence[float], target_lufs: float,
                  ceiling_dbfs: float, clip_lufs: float) -> list[float]:
    """The gain of each clip output (each at `clip_lufs`): its guide's level relative to the
    recording's (the duration-weighted power mean of the clips' levels, i.e. the recording's
    loudness over its audible clips), the whole brought to `target_lufs`, then lowered together so
    no clip peaks above `ceiling_dbfs`."""
    levels = np.array([s.loudness_lufs if math.isfinite(s.loudness_lufs) else -120.0 for s in spans])
    w = np.array([s.duration_s for s in spans])
    recording = 10 * np.log10(np.sum(w * 10 ** (levels / 10)) / np.sum(w))
    gains = levels - recording + (target_lufs - clip_lufs)
    over = max(p + g for p, g in zip(peaks_dbfs, gains)) - ceiling_dbfs
    return [float(g - max(0.0, over)) for g in gains]


def _fade(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross-fade from `a` to `b` (same length) that keeps the power of the mix constant for their
    measured correlation rho: gains g_out = k cos(theta), g_in = k sin(theta) with
    k = 1 / sqrt(1 + rho sin(2 theta)), so that g_out^2 + g_in^2 + 2 rho g_out g_in = 1. rho = 0
    (two independent renderings) is the equal-power fade; rho = 1 (the same signal twice) sums the
    gains to one, so a passage rendered alike in both clips comes back unchanged, not 3 dB louder."""
    n = len(a)
    denom = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    rho = min(1.0, max(0.0, float(np.dot(a, b)) / denom)) if denom > 0 else 0.0
    theta = (np.arange(n, dtype=np.float64) + 0.5) / max(n, 1) * (np.pi / 2)
    k = 1.0 / np.sqrt(1.0 + rho * np.sin(2 * theta))
    return (a * (np.cos(theta) * k) + b * (np.sin(theta) * k)).astype(np.float32)


def stitch(spans: Sequence[ClipSpan], read: Callable[[str], np.ndarray], gains_db: Sequence[float],
           total_samples: int, sample_rate_hz: int, crossfade_s: float = 1.0) -> Iterator[np.ndarray]:
    """The recording as consecutive blocks of exactly `total_samples` samples in all. `read(key)`
    returns a clip output (mono, `sample_rate_hz`); spans are sorted by start. Holds at most two
    clips."""
    sr = sample_rate_hz
    edge = max(1, int(EDGE_FADE_S * sr))
    pos = 0                      # samples emitted so far
    pending: np.ndarray | None = None   # the tail of the previous clip not emitted yet
    pending_at = 0               # its position
    for i, span in enumerate(spans):
        y = read(span.output_key).astype(np.float32) * np.float32(10 ** (gains_db[i] / 20))
        start = int(round(span.start_s * sr))
        end = min(start + len(y), total_samples)
        y = y[:max(0, end - start)]
        if pending is not None:
            p_end = pending_at + len(pending)
            if p_end > start:    # overlap: cross-fade in its middle
                n = min(p_end - start, int(round(crossfade_s * sr)))
                a = start + (p_end - start - n) // 2          # where the fade starts
                head = pending[:a - pending_at]
                mix = _fade(pending[a - pending_at:a - pending_at + n], y[a - start:a - start + n])
                yield np.concatenate([head, mix])
                pos = a + n
                y = y[a + n - start:]
            else:                # a gap (silent in the source): fade out, silence, fade in
                pending = pending.copy()
                pending[-edge:] *= np.linspace(1, 0, min(edge, len(pending)), dtype=np.float32)
                yield pending
                pos = p_end
                if start > pos:
                    yield np.zeros(start - pos, np.float32)
                    pos = start
                y = y.copy()
                y[:edge] *= np.linspace(0, 1, min(edge, len(y)), dtype=np.float32)
        else:
            if start > 0:
                yield np.zeros(start, np.float32)
            pos = start
            if i == 0 and start > 0:
                y = y.copy()
                y[:edge] *= np.linspace(0, 1, min(edge, len(y)), dtype=np.float32)
        pending, pending_at = y, pos
    if pending is not None:
        yield pending
        pos = pending_at + len(pending)
    if pos < total_samples:
        yield np.zeros(total_samples - pos, np.float32)


def joints_s(spans: Sequence[ClipSpan], crossfade_s: float = 1.0) -> list[float]:
    """The centre of each cross-fade `stitch` makes (seconds), for measuring seams."""
    out = []
    for a, b in zip(spans, spans[1:]):
        end = a.start_s + a.duration_s
        if end > b.start_s:
            out.append(b.start_s + (end - b.start_s) / 2)
    return out


def window_joints_s(spans: Sequence[ClipSpan], frame_s: float, window_frames: int, overlap_frames: int) -> list[float]:
    """The centre of each cross-fade between diffusion windows inside the clips (the windowed path,
    tasks/diffusion/windows.py), in the recording's time, for measuring seams; only where a single
    clip covers the recording (not inside a joint between clips, which `joints_s` gives)."""
    clip_joints = joints_s(spans)
    out = []
    for s in spans:
        for a in window_starts(int(round(s.duration_s / frame_s)), window_frames, overlap_frames)[1:]:
            t = s.start_s + (a + overlap_frames / 2) * frame_s
            if all(abs(t - j) > 1.0 for j in clip_joints) and not any(
                    o is not s and o.start_s <= t <= o.start_s + o.duration_s for o in spans):
                out.append(t)
    return sorted(out)


def write_stream(blocks: Iterator[np.ndarray], path: str, in_rate_hz: int, out_rate_hz: int, fmt: str,
                 total_out: int) -> int:
    """Encode the blocks to `path` (FLAC or WAV, 16-bit mono) at `out_rate_hz`, resampled as a
    stream (soxr, HQ) when it differs from `in_rate_hz`; exactly `total_out` samples. A resampler
    adds no bandwidth: a 16 kHz model's output at 44.1 kHz still holds nothing above 8 kHz."""
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"output format {fmt!r}; expected one of {sorted(OUTPUT_FORMATS)}")
    container, subtype = OUTPUT_FORMATS[fmt]
    rs = None if in_rate_hz == out_rate_hz else soxr.ResampleStream(in_rate_hz, out_rate_hz, 1, dtype="float32",
                                                                     quality="HQ")
    written = 0
    with sf.SoundFile(path, "w", samplerate=out_rate_hz, channels=1, format=container, subtype=subtype) as f:
        def put(x: np.ndarray) -> None:
            nonlocal written
            x = np.clip(x[:max(0, total_out - written)], -1.0, 1.0)
            if x.size:
                f.write(x)
                written += x.size
        blocks = iter(blocks)
        block = next(blocks, None)
        while block is not None:
            nxt = next(blocks, None)
            put(block if rs is None else rs.resample_chunk(block, last=nxt is None))
            block = nxt
        if written < total_out:
            f.write(np.zeros(total_out - written, np.float32))
            written = total_out
    return written


def spectral_change(x: np.ndarray, sample_rate_hz: int, frame_s: float = 0.032) -> tuple[np.ndarray, np.ndarray]:
    """Frame-to-frame spectral change: the L2 distance between consecutive frames' log-magnitude
    spectra (dB), and each change's time (s, between the two frames)."""
    n = int(frame_s * sample_rate_hz)
    hop = n // 2
    if x.size < 2 * n:
        return np.zeros(0), np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), n)[::hop] * np.hanning(n)
    mag = 20 * np.log10(np.abs(np.fft.rfft(frames, axis=1)) + 1e-5)
    change = np.linalg.norm(np.diff(mag, axis=0), axis=1) / np.sqrt(mag.shape[1])
    times = (np.arange(1, len(mag)) * hop + n / 2) / sample_rate_hz
    return change, times


def seam_report(x: np.ndarray, sample_rate_hz: int, joints: Sequence[float], away_s: float = 0.5,
                guide: np.ndarray | None = None) -> dict:
    """The spectral change at each joint (the frame pair straddling the joint's centre, where one
    rendering hands over to the next) against the 95th percentile of the same measure at least
    `away_s` from every joint: a seam is a joint that changes more than the music itself does.
    Without seams, 5 % of joints still land above that percentile by chance (a note starting
    there), so a recording is `seamless` when no more joints do than chance allows (binomial, 5 %,
    two standard deviations: none of up to 3 joints, 1 of 4-10, 4 of 39); cuts put most above.
    With `guide` (the source at the same rate), the measure is the change the source does not
    explain, output's minus source's: a note that starts on a joint is the music, not a seam."""
    change, t = spectral_change(x, sample_rate_hz)
    if guide is not None:
        g, _ = spectral_change(guide[:x.size], sample_rate_hz)
        n = min(change.size, g.size)
        change, t = change[:n] - g[:n], t[:n]
    near = np.zeros(t.shape, bool)
    at = []
    for j in joints:
        near |= np.abs(t - j) <= away_s
        if t.size and t[0] <= j <= t[-1]:
            at.append(float(change[int(np.argmin(np.abs(t - j)))]))
    inside = change[~near]
    p95 = float(np.percentile(inside, 95)) if inside.size else float("nan")
    above = int(sum(a > p95 for a in at))
    chance = int(0.05 * len(at) + 2 * np.sqrt(0.05 * 0.95 * len(at)))
    return {"joints": len(at), "max_at_joints": max(at) if at else None, "p95_inside": p95,
            "above_p95": above, "chance_allows": chance, "seamless": above <= chance}
