"""The models shipped in weights/ load as what their cards say, match their recorded checksum, and
decode: the vocoder turns a 440 Hz tone's log-mel back into audio of the right length whose
strongest frequency is 440 Hz."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
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
    x = harmonic_note(4, f0_hz=440, seconds=2.0)
    logmel = LogMel(MelConfig())(torch.from_numpy(x)[None])[0].numpy()
    y = reconstruct(ae.model, logmel)
    assert y.shape == logmel.shape and np.isfinite(y).all()
    assert int(np.argmax(y[:, 50])) == int(np.argmax(logmel[:, 50])), "the note's strongest bin moved"
    # measured 0.66 here: a synthetic note is further from the corpus than the validation clips
    assert float(np.abs(y - logmel).mean()) <= 3 * card["metrics"]["val_l1_log_mel"]


def test_the_shipped_decoder_keeps_the_shipped_encoder_and_is_the_default_of_its_latent_models():
    """weights/decoder-performed: a decoder fine-tuned with the shipped autoencoder's encoder frozen
    (bit for bit, so every shipped latent model's latents are its to decode), declared so on its
    card, the default decoder of those models, and a decoder that keeps a tone where it was."""
    from infra import tracking
    from jobs.decoders import pin_decoder
    from tasks.autoencoder.model import reconstruct
    from tasks.builders import decoder_of, load_autoencoder

    card = json.loads((WEIGHTS / "decoder-performed" / "card.json").read_text())
    data = (WEIGHTS / "decoder-performed" / "model.pt").read_bytes()
    assert hashlib.sha256(data).hexdigest() == card["sha256"] and len(data) == card["bytes"] <= 20 * 2**20
    assert card["kind"] == "autoencoder" and card["training_command"] and card["corpus_command"]
    base_uri, base = tracking.resolve_model("shipped:autoencoder")
    assert card["decodes_latents_of"] == base_uri
    tuned = decoder_of(load_autoencoder(tracking.model_checkpoint(base_uri), base, MelConfig()),
                       load_autoencoder(data, "shipped:decoder-performed", MelConfig()))
    model_uri, model = tracking.resolve_model("shipped:instruments-latent")
    assert pin_decoder(None, model_uri, model)["decoder"].startswith("shipped:decoder-performed@")
    assert pin_decoder("own", model_uri, model) == {}
    x = harmonic_note(4, f0_hz=440, seconds=2.0)
    logmel = LogMel(MelConfig())(torch.from_numpy(x)[None])[0].numpy()
    y = reconstruct(tuned.model, logmel)
    assert y.shape == logmel.shape and np.isfinite(y).all()
    assert int(np.argmax(y[:, 50])) == int(np.argmax(logmel[:, 50])), "the note's strongest bin moved"
    # its figures: on performed held-out audio every instrument decodes nearer to real than through the base
    cs = card["metrics"]["copy_synthesis_performed"]
    assert all(cs["this_then_vocoder"][k] < cs["base_autoencoder_then_vocoder"][k] for k in cs["real"])


# A note each domain's model should know: a flute's few strong harmonics, a bowed string's many
# (1/k, like a sawtooth's). Measured (sigma 1, C5; squared error of D(x; 1) against the clean latent,
# the noisy input's is 1.06):        3-harmonic note   10-harmonic note   a real clip of its domain
#   flute-latent                         0.48              0.64               0.12
#   violin-latent                        1.17              0.48               0.11
#   cond-violin-to-flute-latent          0.41 (given the 10-harmonic note as its violin source)
# Each is better on its own domain's note, and an untrained denoiser (c_skip x plus nothing) scores
# 0.59 or worse on either.
HARMONICS = {"flute": 3, "violin": 10}
SHIPPED_DENOISERS = [("flute-latent", "flute", None), ("violin-latent", "violin", None),
                     ("cond-violin-to-flute-latent", "flute", "violin")]


def harmonic_note(harmonics: int, f0_hz: float = 523.25, seconds: float = 2.56) -> np.ndarray:
    """A note (default C5 for 2.56 s, one latent training crop) over a faint noise floor: the clips
    the models learned from are never digitally silent, and a bare sine's empty bins at the log
    floor are outside what they know."""
    x = sum(tone(f0_hz * k, seconds, amp=0.3 / k) for k in range(1, harmonics + 1)).astype(np.float32)
    return x + np.float32(1e-3) * np.random.default_rng(0).standard_normal(len(x)).astype(np.float32)


@torch.no_grad()
@pytest.mark.parametrize("folder,domain,source", SHIPPED_DENOISERS)
def test_a_shipped_latent_denoiser_matches_its_card_pairs_with_the_shipped_autoencoder_and_denoises(folder, domain, source):
    """A latent denoiser stored in float16: it loads as the card says, names the shipped
    autoencoder by that file's checksum (so the pipeline encodes its guides with it), and denoises
    the latent of its domain's note at sigma 1 (a conditional one given the source domain's note)."""
    from tasks.builders import load_autoencoder, load_model
    from tasks.diffusion.train_data import normalise

    card = json.loads((WEIGHTS / folder / "card.json").read_text())
    data = (WEIGHTS / folder / "model.pt").read_bytes()
    assert hashlib.sha256(data).hexdigest() == card["sha256"] and len(data) == card["bytes"] <= 20 * 2**20
    assert card["kind"] == "denoiser" and card["training_command"] and card["corpus_command"]
    loaded = load_model(data, card["model"])
    assert loaded.card.domain == domain and loaded.card.representation == "latent"
    assert loaded.card.cond_domain == source
    ae_sha = hashlib.sha256((WEIGHTS / "autoencoder" / "model.pt").read_bytes()).hexdigest()
    assert loaded.card.encoder == f"shipped:autoencoder@{ae_sha[:16]}" == card["encoder"]
    ae = load_autoencoder((WEIGHTS / "autoencoder" / "model.pt").read_bytes(), "ae", MelConfig())
    assert loaded.card.n_mels == ae.card.latent_channels and loaded.card.time_downsample == ae.card.time_downsample

    def latent(domain: str) -> torch.Tensor:
        return ae.model.encode(LogMel(MelConfig())(torch.from_numpy(harmonic_note(HARMONICS[domain]))[None]))[0][0][:, :32]

    z = normalise(latent(domain), loaded.card.mean, loaded.card.std)[None]
    cond = None if source is None else normalise(latent(source), *loaded.card.guide_stats(conditional_input=True))[None]
    sigma = 1.0
    noisy = z + sigma * torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    error = float((loaded.model.eval()(noisy, torch.tensor([sigma]), cond) - z).pow(2).mean())
    assert error < 0.5 * float((noisy - z).pow(2).mean()) and error < 0.4 * float(z.pow(2).mean()), error


def test_a_float16_checkpoint_loads_into_the_float32_model_within_half_precision():
    from schemas.diffusion import ModelConfig
    from schemas.training import TRAIN_PRESETS, TrainConfig
    from tasks.builders import build_model, load_checkpoint_bytes
    from tasks.diffusion.checkpoint import checkpoint_bytes, float16_checkpoint

    cfg = TrainConfig(domain="x", features_url="x", **TRAIN_PRESETS["tiny"])
    torch.manual_seed(0)
    model = build_model(ModelConfig(unet=cfg.unet_config(16))).eval()
    full = checkpoint_bytes(model, {"note": "kept"})
    half = float16_checkpoint(full)
    assert len(half) < 0.6 * len(full)
    back, metadata = load_checkpoint_bytes(half)
    assert metadata == {"note": "kept"} and all(p.dtype == torch.float32 for p in back.parameters())
    for (k, w), w16 in zip(model.state_dict().items(), back.state_dict().values()):
        if w.is_floating_point() and w.abs().max() > 0:
            assert torch.allclose(w16, w.half().float()), k  # rounded once, then exactly restored
    assert any(not torch.equal(w, w16) for w, w16 in zip(model.state_dict().values(), back.state_dict().values()))
    x, s = torch.randn(2, 16, 32), torch.tensor([0.5, 2.0])
    with torch.no_grad():
        assert torch.allclose(model(x, s), back.eval()(x, s), rtol=1e-2, atol=1e-2)


INSTRUMENTS_MODEL = WEIGHTS / "instruments-latent"


@torch.no_grad()
@pytest.mark.skipif(not (INSTRUMENTS_MODEL / "model.pt").exists(), reason="no model of several instruments shipped")
def test_the_shipped_instrument_model_knows_each_instrument_by_its_label():
    """The model of several instruments loads as its card says (labels included) and, on a phrase
    each instrument plays through FluidR3 (a trained soundfont; a melody of its own, not from the
    corpus), denoises it better under its own label than under the mean of the other labels, at a
    noise level where timbre, not pitch, is what is left to guess."""
    from tasks.builders import load_autoencoder, load_model
    from tasks.diffusion.conditional import labelled
    from tasks.diffusion.train_data import normalise
    from tasks.midi import instrument, render

    import pretty_midi

    card = json.loads((INSTRUMENTS_MODEL / "card.json").read_text())
    data = (INSTRUMENTS_MODEL / "model.pt").read_bytes()
    assert hashlib.sha256(data).hexdigest() == card["sha256"] and len(data) == card["bytes"] <= 20 * 2**20
    assert card["kind"] == "denoiser" and card["training_command"] and card["corpus_command"]
    loaded = load_model(data, card["model"])
    labels = loaded.card.labels
    assert len(labels) >= 6 and list(labels) == card["labels"]
    ae = load_autoencoder((WEIGHTS / "autoencoder" / "model.pt").read_bytes(), "ae", MelConfig())
    assert loaded.card.encoder == card["encoder"] and loaded.card.n_mels == ae.card.latent_channels
    g = torch.Generator().manual_seed(0)
    wins = 0
    for k, name in enumerate(labels):
        inst = instrument(name)
        pm = pretty_midi.PrettyMIDI()
        part = pretty_midi.Instrument(inst.gm_program)
        low = inst.low_midi + 5
        for i, step in enumerate([0, 2, 4, 5, 7, 5, 4, 2, 0, 7, 4, 0]):
            part.notes.append(pretty_midi.Note(90, low + step, 0.4 * i, 0.4 * i + 0.38))
        pm.instruments.append(part)
        x = render(pm, 16000, "fluidr3")[:16000 * 5]
        z = ae.model.encode(LogMel(MelConfig())(torch.from_numpy(x)[None]))[0][0][:, :32]
        z = normalise(z, loaded.card.mean, loaded.card.std)[None]
        sigma = torch.tensor([1.5])
        noisy = z + sigma * torch.randn(z.shape, generator=g)
        errors = [float((labelled(loaded.model, j)(noisy, sigma) - z).pow(2).mean()) for j in range(len(labels))]
        own, others = errors[k], [e for j, e in enumerate(errors) if j != k]
        wins += own < sum(others) / len(others)
    assert wins >= len(labels) - 1, wins  # measured: see the card's "label_test"


def test_the_shipped_instrument_probe_matches_its_card_and_scores_every_held_out_set():
    """The probe `--t-init auto` and the tables' target accuracy use: loaded only through its card's
    checksum, six labels, and a card that scores it on each held-out collection per instrument."""
    from infra.shipped import probe_bytes
    from tasks.probe import InstrumentProbe

    card = json.loads((WEIGHTS / "instrument-probe" / "card.json").read_text())
    pinned, data = probe_bytes("shipped:instrument-probe")
    assert pinned == f"shipped:instrument-probe@{card['sha256'][:16]}" and len(data) == card["bytes"]
    probe = InstrumentProbe.from_bytes(data)
    assert probe.labels == tuple(card["labels"]) == ("cello", "clarinet", "flute", "oboe", "trumpet", "violin")
    sets = {r["collection"] for r in card["accuracy"]}
    assert {"oneills-fluidr3", "oneills-gmbank", "trecento-fluidr3", "trecento-gmbank"} <= sets
    for s in sets:
        assert {r["instrument"] for r in card["accuracy"] if r["collection"] == s} == set(probe.labels)
    fluidr3 = [r["accuracy"] for r in card["accuracy"] if r["collection"].endswith("fluidr3")]
    assert min(fluidr3) >= 0.95  # through the trained soundfont; the unseen GM bank's flute is the card's weak row
    p = probe.probabilities(torch.randn(3, 128, 64) - 4)
    assert p.shape == (3, 6) and torch.allclose(p.sum(-1), torch.ones(3))
