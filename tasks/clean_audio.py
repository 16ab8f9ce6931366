"""The clean clips a decoder learns from (the vocoder, the autoencoder): decoded once from clips
datasets, sorted by clip ID (so every seeded draw picks the same clip on any machine), with the
held-out clips (split 'valid', else 'test') for validation."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infra.datasets import ShardedDataset
from tasks.audio import decode_audio_bytes


@dataclass
class CleanClips:
    train: list[np.ndarray]   # mono float32 at the front end's rate, by clip ID
    held: list[np.ndarray]    # the first `validation_clips` held-out clips (or the last train clips)
    held_split: str           # 'valid', 'test' or 'train-tail'


def clean_clips(clips_urls: tuple[str, ...], domains: tuple[str, ...] | None, sample_rate_hz: int,
                validation_clips: int, what: str) -> CleanClips:
    """`what` names the learner in errors (e.g. "the vocoder's front end")."""
    rows = []
    for url in clips_urls:
        t = ShardedDataset.at(url, "clips").read(["clip_id", "domain", "role", "split", "audio_flac"]).to_pylist()
        rows += [r for r in t if r["role"] == "clean" and (domains is None or r["domain"] in domains)]
    rows = sorted({r["clip_id"]: r for r in rows}.values(), key=lambda r: r["clip_id"])

    def audio(r: dict) -> np.ndarray:
        x, rate = decode_audio_bytes(r["audio_flac"])
        if rate != sample_rate_hz:
            raise ValueError(f"clip {r['clip_id']} is at {rate} Hz; {what} expects {sample_rate_hz} Hz")
        return np.asarray(x, np.float32)

    train = [audio(r) for r in rows if r["split"] == "train"]
    if not train:
        raise ValueError(f"no clean train clips{f' of {domains}' if domains else ''} in {', '.join(clips_urls)}")
    for split in ("valid", "test"):
        held = [audio(r) for r in rows if r["split"] == split][:validation_clips]
        if held:
            return CleanClips(train, held, split)
    return CleanClips(train, train[-validation_clips:], "train-tail")  # named in the run's result
