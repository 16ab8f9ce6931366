"""The models shipped in weights/ load as what their cards say, match their recorded checksum, and
decode: the vocoder turns a 440 Hz tone's log-mel back into audio of the right length whose
strongest frequency is 440 Hz."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from schemas.configs import MelConfig
from tasks.builders import load_vocoder
from tasks.features import LogMel
from tests.conftest import tone

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"


def test_the_shipped_vocoder_matches_its_card_and_decodes_a_tone():
    card = json.loads((WEIGHTS / "vocoder" / "card.json").read_text())
    data = (WEIGHTS / "vocoder" / "model.pt").read_bytes()
    assert hashlib.sha256(data).hexdigest() == card["sha256"] and len(data) == card["bytes"] <= 20 * 2**20
    assert card["kind"] == "vocoder" and card["training_command"] and card["corpus_command"]
    vocoder = load_vocoder(data, card["model"], MelConfig())
    x = tone(440, 2.0)
    logmel = LogMel(MelConfig())(torch.from_numpy(x)[None])[0].numpy()
    y = vocoder(logmel)
    assert y.shape == ((logmel.shape[-1] - 1) * 320,) and np.isfinite(y).all() and np.abs(y).max() > 1e-3
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert abs(np.argmax(spectrum) * 16000 / len(y) - 440) < 15


def test_the_shipped_autoencoder_matches_its_card_and_keeps_a_tone_where_it_was():
    from tasks.autoencoder.model import reconstruct
    from tasks.builders import load_autoencoder

    card = json.loads((WEIGHTS / "autoencoder" / "card.json").read_text())
    data = (WEIGHTS / "autoencoder" / "model.pt").read_bytes()
    assert hashlib.sha256(data).hexdigest() == card["sha256"] and len(data) == card["bytes"] <= 20 * 2**20
    assert card["kind"] == "autoencoder" and card["training_command"] and card["corpus_command"]
    ae = load_autoencoder(data, card["model"], MelConfig())
    assert ae.card.mel.n_mels * ae.card.time_downsample / ae.card.latent_channels == card["compression"] >= 8
    # a harmonic 440 Hz note over a faint noise floor (the clips it learned from are never digitally
    # silent: a bare sine's empty bins at the log floor are outside what it knows)
    x = sum(tone(440 * k, 2.0, amp=0.3 / k) for k in (1, 2, 3, 4)).astype(np.float32)
    x += np.float32(1e-3) * np.random.default_rng(0).standard_normal(len(x)).astype(np.float32)
    logmel = LogMel(MelConfig())(torch.from_numpy(x)[None])[0].numpy()
    y = reconstruct(ae.model, logmel)
    assert y.shape == logmel.shape and np.isfinite(y).all()
    assert int(np.argmax(y[:, 50])) == int(np.argmax(logmel[:, 50])), "the note's strongest bin moved"
    # measured 0.66 here: a synthetic note is further from the corpus than the validation clips
    assert float(np.abs(y - logmel).mean()) <= 3 * card["metrics"]["val_l1_log_mel"]
