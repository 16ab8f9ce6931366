"""Log-mel features: batched torch front end, fixed-length segments (through the mel autoencoder's
encoder for latent features), normalisation statistics. Defaults are DiffTransfer's (see schemas.configs.MelConfig)."""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import torch
import torchaudio

from schemas.configs import FeatureConfig, MelConfig
from schemas.tables import FEATURES
from tasks.audio import clip_spans, decode_audio_bytes, stft_num_frames
from tasks.autoencoder.model import MelAutoencoder
from tasks.errors import clean_reason
from tasks.feature_values import values_column
from tasks.ids import content_id


class LogMel(torch.nn.Module):
    """x [batch, samples] -> natural-log mel magnitude [batch, n_mels, frames].
    Slaney mel scale and area normalisation, as librosa's defaults."""

    def __init__(self, cfg: MelConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.win_length_samples), persistent=False)
        fb = torchaudio.functional.melscale_fbanks(
            cfg.n_fft // 2 + 1, cfg.f_min_hz, cfg.f_max_hz, cfg.n_mels, cfg.sample_rate_hz,
            norm="slaney", mel_scale="slaney")  # [freq, mels]
        self.register_buffer("mel_fb_t", fb.T.contiguous(), persistent=False)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.differentiable(x)

    def differentiable(self, x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
        """The same log-mel with autograd (a vocoder's mel loss back-propagates through it). `eps`
        inside the magnitude's square root keeps its gradient finite at an exactly zero bin."""
        c = self.cfg
        spec = torch.stft(x, c.n_fft, c.hop_length_samples, c.win_length_samples, self.window,
                          center=c.center, pad_mode="constant", return_complex=True)
        # |z| as sqrt(re² + im²) on the real view: 2x faster on CPU than complex abs(), which
        # goes through an overflow-safe hypot that log-mel magnitudes (< 1e4) never need.
        ri = torch.view_as_real(spec)
        power = ri[..., 0] * ri[..., 0] + ri[..., 1] * ri[..., 1]
        mag = (power + eps if eps else power).sqrt_()  # in place: no extra tensor on the features' hot path
        return torch.log(torch.clamp(self.mel_fb_t @ mag, min=c.log_floor))


# Clips per tensor call: small stacks keep the STFT and magnitude cache-sized; larger ones are
# memory-bound (measured on 2 cores, ten-second clips: 2/call is 1.3x faster per clip than 8,
# and 8 was 2.4x faster than 64).
CLIPS_PER_CALL = 2


def logmel_batch(audio: Sequence[np.ndarray], front_end: LogMel) -> list[np.ndarray]:
    """Log-mels of many signals. Signals of equal length are stacked into one tensor call
    (clips mostly share a length), so the result of one signal never depends on its batch."""
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, a in enumerate(audio):
        by_len[a.size].append(i)
    out: list[np.ndarray | None] = [None] * len(audio)
    for _, same_len in by_len.items():
        for k in range(0, len(same_len), CLIPS_PER_CALL):
            idx = same_len[k:k + CLIPS_PER_CALL]
            m = front_end(torch.from_numpy(np.stack([audio[i] for i in idx]).astype(np.float32))).numpy()
            for j, i in enumerate(idx):
                out[i] = m[j]
    return out  # type: ignore[return-value]


def segments(logmel: np.ndarray, cfg: FeatureConfig) -> list[tuple[int, np.ndarray, int]]:
    """(start_frame, segment [n_mels, segment_frames], valid_frames); a clip shorter than one
    segment is padded with the log floor and says how many frames are real."""
    n = logmel.shape[1]
    floor = math.log(cfg.mel.log_floor)
    out = []
    for a, b in clip_spans(n, cfg.segment_frames, cfg.segment_hop_frames):
        seg = logmel[:, a:b]
        valid = b - a
        if valid < cfg.segment_frames:
            seg = np.pad(seg, ((0, 0), (0, cfg.segment_frames - valid)), constant_values=floor)
        out.append((a, np.ascontiguousarray(seg, dtype=np.float32), valid))
    return out


class BinStats:
    """Per-bin count/sum/sum of squares in float64, mergeable across workers and runs."""

    def __init__(self, num_bins: int):
        self.count = 0
        self.sum = np.zeros(num_bins)
        self.sumsq = np.zeros(num_bins)

    def add(self, seg: np.ndarray, valid_frames: int) -> None:
        v = seg[:, :valid_frames].astype(np.float64)
        self.count += v.shape[1]
        self.sum += v.sum(axis=1)
        self.sumsq += (v ** 2).sum(axis=1)

    def merge(self, other: "BinStats") -> None:
        self.count += other.count
        self.sum += other.sum
        self.sumsq += other.sumsq

    def to_dict(self) -> dict:
        mean = self.sum / max(self.count, 1)
        var = np.maximum(self.sumsq / max(self.count, 1) - mean ** 2, 0.0)
        return {"count": self.count, "sum": self.sum.tolist(), "sumsq": self.sumsq.tolist(),
                "mean": mean.tolist(), "std": np.sqrt(var).tolist()}

    def to_sums(self) -> dict:
        """The mergeable part only (what a dataset commit stores)."""
        return {"count": self.count, "sum": self.sum.tolist(), "sumsq": self.sumsq.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "BinStats":
        s = cls(len(d["sum"]))
        s.count, s.sum, s.sumsq = int(d["count"]), np.array(d["sum"]), np.array(d["sumsq"])
        return s


def total_stats(per_writer: dict) -> dict[str, BinStats]:
    """A feature set's statistics per (role/domain/split) group: the sum over the writers that
    added to it (each commit records its own sums under its writer ID)."""
    out: dict[str, BinStats] = {}
    for groups in per_writer.values():
        for k, d in groups.items():
            out.setdefault(k, BinStats(len(d["sum"]))).merge(BinStats.from_dict(d))
    return out


def _quarantine(clip: dict, reason: str, config_hash: str) -> dict:
    return {"source_uri": clip["source_uri"], "source_id": clip["clip_id"], "stage": "features",
            "reason": clean_reason(reason), "detail": "", "config_hash": config_hash}


def decode_all(payloads: list[bytes]) -> list:
    """Decode FLAC payloads on a few threads (libsndfile runs without the GIL); an item that
    fails is returned as its exception, so one bad clip cannot sink the others."""
    def one(b: bytes):
        try:
            return decode_audio_bytes(b)
        except Exception as e:
            return e

    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        return list(pool.map(one, payloads))


CLIP_COLUMNS_FOR_FEATURES = ("clip_id", "role", "domain", "split", "source_uri", "audio_flac")


# Segments per encoder call: a fixed, small batch keeps the latent of a segment independent of
# how many segments its clip happened to have (and the memory bounded on long clips).
ENCODE_BATCH = 16


@torch.inference_mode()
def encode_segments(segs: list[np.ndarray], valid: list[int], encoder: MelAutoencoder) -> list[tuple[np.ndarray, int]]:
    """(latent [C, segment_frames / r], valid latent frames) per log-mel segment: the posterior mean."""
    out = []
    for k in range(0, len(segs), ENCODE_BATCH):
        z = encoder.encode(torch.from_numpy(np.stack(segs[k:k + ENCODE_BATCH])))[0].numpy()
        out += [(np.ascontiguousarray(m, dtype=np.float32), encoder.latent_frames(v))
                for m, v in zip(z, valid[k:k + ENCODE_BATCH])]
    return out


def feature_rows(clips: pa.Table, cfg: FeatureConfig, front_end: LogMel, encoder: MelAutoencoder | None = None,
                 ) -> tuple[list[dict], dict[str, BinStats], list[dict]]:
    """Feature rows for a table of clips, per-domain train statistics, and quarantine rows for
    clips that cannot be featurised (wrong rate, undecodable). kind=latent: each log-mel segment
    through `encoder` (statistics then per latent channel)."""
    if (cfg.kind == "latent") != (encoder is not None):
        raise ValueError(f"kind={cfg.kind!r} features {'need' if cfg.kind == 'latent' else 'take no'} encoder")
    if encoder is not None and cfg.segment_frames % encoder.cfg.time_downsample:
        raise ValueError(f"segment_frames={cfg.segment_frames} is not a multiple of the encoder's time_downsample="
                         f"{encoder.cfg.time_downsample}: a segment's last latent frame would be part padding")
    h = cfg.config_hash()
    keep = [r for r in clips.to_pylist() if r["role"] in cfg.roles]
    audio, metas, bad = [], [], []
    for r, decoded in zip(keep, decode_all([r["audio_flac"] for r in keep])):
        if isinstance(decoded, Exception):
            bad.append(_quarantine(r, f"undecodable clip audio ({decoded})", h))
        elif decoded[1] != cfg.mel.sample_rate_hz:
            bad.append(_quarantine(r, f"clip rate {decoded[1]} Hz; the feature config expects "
                                      f"{cfg.mel.sample_rate_hz} Hz", h))
        else:
            audio.append(decoded[0])
            metas.append(r)
    rows, stats = [], {}
    for r, m in zip(metas, logmel_batch(audio, front_end)):
        segs = segments(m, cfg)
        values = [(seg, valid) for _, seg, valid in segs]
        if encoder is not None:
            values = encode_segments([v[0] for v in values], [v[1] for v in values], encoder)
        for k, ((start, _, _), (seg, valid)) in enumerate(zip(segs, values)):
            rows.append(dict(feature_id=content_id("feature", r["clip_id"], h, k), clip_id=r["clip_id"],
                             kind=cfg.kind, domain=r["domain"], role=r["role"], split=r["split"],
                             segment_index=k, start_frame=start, num_frames=seg.shape[1],
                             num_valid_frames=valid, num_bins=seg.shape[0], values=seg.ravel(),
                             config_hash=h))
            if r["split"] == "train":
                key = f"{r['role']}/{r['domain']}"
                stats.setdefault(key, BinStats(seg.shape[0])).add(seg, valid)
    return rows, stats, bad


def features_table(rows: list[dict], dtype: str) -> pa.Table:
    """The FEATURES table of `feature_rows`' rows (values: float32 arrays), column-wise: the values
    go in as one binary array over one cast, concatenated buffer (row by row through Python would
    convert or copy each segment on its own)."""
    cols = {f.name: (values_column([r["values"] for r in rows], dtype) if f.name == "values"
                     else pa.array([dtype] * len(rows), type=f.type) if f.name == "values_dtype"
                     else pa.array([r[f.name] for r in rows], type=f.type)) for f in FEATURES}
    return pa.Table.from_pydict(cols, schema=FEATURES)


def num_frames_for(num_samples: int, cfg: MelConfig) -> int:
    return stft_num_frames(num_samples, cfg.hop_length_samples, cfg.n_fft, cfg.center)
