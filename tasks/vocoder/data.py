"""A vocoder's training audio: the clean clips of clips datasets, decoded once, sorted by clip ID
(so every seeded draw picks the same clip on any machine); validation is a fixed 2 s segment of
each of the first held-out clips."""
from __future__ import annotations

import numpy as np
import torch

from infra.datasets import ShardedDataset
from schemas.vocoder import VocoderTrainConfig
from tasks.audio import decode_audio_bytes
from tasks.vocoder.kind import VocoderData

VALIDATION_SECONDS = 2.0
REFERENCE_CLIPS = 64  # real train clips whose embeddings are the champion rule's FAD reference


def vocoder_data(cfg: VocoderTrainConfig) -> VocoderData:
    rows = []
    for url in cfg.clips_urls:
        t = ShardedDataset.at(url, "clips").read(["clip_id", "domain", "role", "split", "audio_flac"]).to_pylist()
        rows += [r for r in t if r["role"] == "clean" and (cfg.domains is None or r["domain"] in cfg.domains)]
    rows = sorted({r["clip_id"]: r for r in rows}.values(), key=lambda r: r["clip_id"])
    sr = cfg.mel.sample_rate_hz

    def audio(r: dict) -> np.ndarray:
        x, rate = decode_audio_bytes(r["audio_flac"])
        if rate != sr:
            raise ValueError(f"clip {r['clip_id']} is at {rate} Hz; the vocoder's front end expects {sr} Hz")
        return np.asarray(x, np.float32)

    train = [audio(r) for r in rows if r["split"] == "train"]
    if not train:
        raise ValueError(f"no clean train clips{f' of {cfg.domains}' if cfg.domains else ''} in {', '.join(cfg.clips_urls)}")
    held, split = _held_out(rows)
    n = int(VALIDATION_SECONDS * sr)
    whole = [audio(r) for r in held[:cfg.validation_clips]]
    if not whole:  # no held-out split: the last train clips (named in the run's result)
        whole, split = train[-cfg.validation_clips:], "train-tail"
    val = [np.pad(a[:n], (0, max(0, n - len(a)))) for a in whole]
    step = max(1, len(train) // REFERENCE_CLIPS)
    return VocoderData(train, torch.from_numpy(np.stack(val)), split, whole, train[::step][:REFERENCE_CLIPS])


def _held_out(rows: list[dict]) -> tuple[list[dict], str]:
    for split in ("valid", "test"):
        held = [r for r in rows if r["split"] == split]
        if held:
            return held, split
    return [], ""
