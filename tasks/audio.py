"""Audio primitives: spans, loudness, FLAC, streaming decode + resample. Pure functions."""
from __future__ import annotations

import io
import math
from collections.abc import Iterator
from typing import IO

import numpy as np
import pyloudnorm
import soundfile as sf
import soxr


class AudioError(ValueError):
    """A source that cannot become clips; the message is the quarantine reason."""


def check_audio(audio: np.ndarray, what: str = "audio") -> np.ndarray:
    """Mono float32, finite, not empty: every metric's first line of defence."""
    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"{what}: need mono audio [samples], got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{what}: empty signal")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: contains NaN or infinite samples")
    return x.astype(np.float32, copy=False)


def clip_spans(num_samples: int, clip_samples: int, hop_samples: int) -> list[tuple[int, int]]:
    """[start, end) spans of clips covering [0, num_samples): full clips every hop, plus one
    clip aligned to the end if the hops left a tail. A source shorter than a clip is one span."""
    if clip_samples <= 0 or hop_samples <= 0:
        raise ValueError(f"clip_samples={clip_samples}, hop_samples={hop_samples}: expected > 0")
    if num_samples <= clip_samples:
        return [(0, num_samples)] if num_samples > 0 else []
    spans = [(s, s + clip_samples) for s in range(0, num_samples - clip_samples + 1, hop_samples)]
    if spans[-1][1] < num_samples:
        spans.append((num_samples - clip_samples, num_samples))
    return spans


def stft_num_frames(num_samples: int, hop_length_samples: int, n_fft: int, center: bool) -> int:
    """Frames of an STFT (torch/librosa convention): centred pads n_fft//2 on both sides."""
    if center:
        return 1 + num_samples // hop_length_samples
    return 0 if num_samples < n_fft else 1 + (num_samples - n_fft) // hop_length_samples


def peak_dbfs(x: np.ndarray) -> float:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return -math.inf if peak == 0 else 20 * math.log10(peak)


def loudness_lufs(x: np.ndarray, sample_rate_hz: int) -> float:
    """ITU-R BS.1770-4 integrated loudness; RMS in dBFS for clips shorter than one 400 ms block."""
    if x.size < int(0.4 * sample_rate_hz):
        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
        return -math.inf if rms == 0 else 20 * math.log10(rms)
    return float(pyloudnorm.Meter(sample_rate_hz).integrated_loudness(x.astype(np.float64)))


def normalise_loudness(x: np.ndarray, sample_rate_hz: int, target_lufs: float,
                       peak_ceiling_dbfs: float) -> tuple[np.ndarray, float, float]:
    """Gain to `target_lufs`, lowered if needed so the peak stays under the ceiling.
    Returns (audio, gain_db, measured_lufs)."""
    lufs = loudness_lufs(x, sample_rate_hz)
    if not math.isfinite(lufs):
        lufs = peak_dbfs(x) if math.isfinite(peak_dbfs(x)) else -120.0
    gain_db = target_lufs - lufs
    gain_db = min(gain_db, peak_ceiling_dbfs - peak_dbfs(x))
    return (x * 10 ** (gain_db / 20)).astype(np.float32), float(gain_db), float(lufs)


def encode_flac(x: np.ndarray, sample_rate_hz: int) -> bytes:
    return encode_audio(x, sample_rate_hz, "FLAC")


def encode_audio(x: np.ndarray, sample_rate_hz: int, fmt: str = "WAV") -> bytes:
    """16-bit PCM bytes in `fmt` (WAV for listening pages, FLAC for storage); clipped to [-1, 1]."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1.0, 1.0), sample_rate_hz, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def decode_audio_bytes(data: bytes) -> tuple[np.ndarray, int]:
    """Mono float32 and rate from encoded bytes (FLAC/WAV/OGG/MP3)."""
    x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    # Mono needs no mean: the column view skips a reduction pass (~13 % of decode, measured).
    return (x[:, 0] if x.shape[1] == 1 else x.mean(axis=1)), int(sr)


def wav_truncation(f: IO[bytes]) -> str | None:
    """For a RIFF/WAVE stream: a reason if its data chunk is shorter than its header declares
    (libsndfile silently reads what is there), else None. Leaves the stream at its start."""
    start = f.tell()
    head = f.read(1 << 16)
    f.seek(0, 2)
    size = f.tell() - start
    f.seek(start)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        cid, n = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if cid == b"data":
            have = size - (pos + 8)
            # 0 and 0xFFFFFFFF: streaming writers that never went back to fill in the size.
            if n not in (0, 0xFFFFFFFF) and have < n:
                return (f"truncated WAV: the header declares {n} bytes of audio, the file holds {have}; "
                        "expected a complete file")
            return None
        pos += 8 + n + (n & 1)
    return None


def stream_mono(f: IO[bytes], out_rate_hz: int, block_frames: int = 1 << 16) -> Iterator[np.ndarray]:
    """Decode in blocks, downmix to mono, resample with soxr (VHQ) as a stream: memory is
    bounded by the block size, whatever the file length. Raises AudioError on NaN/inf and on a
    WAV shorter than its header says."""
    if reason := wav_truncation(f):
        raise AudioError(reason)
    try:
        s = sf.SoundFile(f)
    except Exception as e:
        raise AudioError(f"undecodable audio ({type(e).__name__}: {e}); expected WAV/FLAC/OGG/MP3") from e
    with s:
        rs = None if s.samplerate == out_rate_hz else soxr.ResampleStream(
            s.samplerate, out_rate_hz, 1, dtype="float32", quality="VHQ")
        read = 0
        while True:
            try:
                block = s.read(block_frames, dtype="float32", always_2d=True)
            except Exception as e:
                raise AudioError(f"decode failed after {read / s.samplerate:.2f} s ({e}); "
                                 "expected a complete file") from e
            last = block.shape[0] < block_frames
            if block.size and not np.isfinite(block).all():
                bad = read + int(np.argmax(~np.isfinite(block).all(axis=1)))
                raise AudioError(f"non-finite samples (NaN/inf) at {bad / s.samplerate:.3f} s; "
                                 "expected finite PCM")
            read += block.shape[0]
            mono = block.mean(axis=1) if block.size else np.zeros(0, np.float32)
            out = mono if rs is None else rs.resample_chunk(mono, last=last)
            if out.size:
                yield out.astype(np.float32, copy=False)
            if last:
                return


def stream_clips(blocks: Iterator[np.ndarray], clip_samples: int,
                 hop_samples: int) -> Iterator[tuple[int, np.ndarray]]:
    """Cut a stream of mono blocks into (start_sample, clip) with the spans of `clip_spans`
    for the total length, holding at most one clip plus one block in memory."""
    buf = np.zeros(0, np.float32)
    buf_start = 0        # absolute index of buf[0]
    next_start = 0       # next regular clip start
    total = 0
    last_emitted_end = 0
    for block in blocks:
        buf = np.concatenate([buf, block])
        total += block.size
        while next_start + clip_samples <= total:
            a = next_start - buf_start
            yield next_start, buf[a:a + clip_samples].copy()
            last_emitted_end = next_start + clip_samples
            next_start += hop_samples
        # keep only what a later clip (regular or the end-aligned tail) can still need
        keep_from = max(0, min(next_start, total - clip_samples)) if total > clip_samples else 0
        if keep_from > buf_start:
            buf = buf[keep_from - buf_start:]
            buf_start = keep_from
    if total == 0:
        return
    if total <= clip_samples:
        if last_emitted_end == 0:  # shorter than one clip: the whole source is one clip
            yield 0, buf.copy()
        return
    if last_emitted_end < total:
        start = total - clip_samples
        yield start, buf[start - buf_start:].copy()
