"""A vocoder's training audio: the clean clips of clips datasets (tasks/clean_audio.py);
validation is a fixed 2 s segment of each of the first held-out clips."""
from __future__ import annotations

import numpy as np
import torch

from schemas.vocoder import VocoderTrainConfig
from tasks.clean_audio import clean_clips
from tasks.vocoder.kind import VocoderData

VALIDATION_SECONDS = 2.0
REFERENCE_CLIPS = 64  # real train clips whose embeddings are the champion rule's FAD reference


def vocoder_data(cfg: VocoderTrainConfig) -> VocoderData:
    clips = clean_clips(cfg.clips_urls, cfg.domains, cfg.mel.sample_rate_hz, cfg.validation_clips,
                        "the vocoder's front end")
    n = int(VALIDATION_SECONDS * cfg.mel.sample_rate_hz)
    val = [np.pad(a[:n], (0, max(0, n - len(a)))) for a in clips.held]
    step = max(1, len(clips.train) // REFERENCE_CLIPS)
    return VocoderData(clips.train, torch.from_numpy(np.stack(val)), clips.held_split, clips.held,
                       clips.train[::step][:REFERENCE_CLIPS])
