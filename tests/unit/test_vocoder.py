"""The vocoder kind (issue 18, first part): the Vocos model's shapes and refusals, its spectral
losses, and its training through the common solver (in-process, tiny preset): deterministic,
and a run resumed from its checkpoint ends with the same weights as an unbroken one."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from infra.storage import Storage
from schemas.configs import IngestConfig
from schemas.records import TrainRunLayout, VocoderCard
from schemas.training import TrainLogistics
from schemas.vocoder import VOCODER_PRESETS, VocoderTrainConfig
from tasks.builders import build_model
from tasks.diffusion.checkpoint import load_train_state
from tasks.vocoder.losses import multi_resolution_stft
from tests.conftest import ship_card, tone, write_wav

HOP = 320


def tiny_cfg(clips_url: str, **over) -> VocoderTrainConfig:
    return VocoderTrainConfig(clips_urls=(clips_url,), **{**VOCODER_PRESETS["tiny"], **over})


@pytest.mark.parametrize("frames", [2, 3, 37, 128])
def test_any_number_of_frames_decodes_to_the_features_length(frames):
    torch.manual_seed(0)
    model = build_model(tiny_cfg("x").vocos()).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 128, frames))
    assert y.shape == (2, (frames - 1) * HOP) and bool(torch.isfinite(y).all())
    with pytest.raises(ValueError, match="at least 2"):
        model(torch.randn(1, 128, 1))


def test_non_finite_mels_are_refused_with_a_clear_error():
    model = build_model(tiny_cfg("x").vocos())
    x = torch.randn(1, 128, 10)
    x[0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        model(x)
    # where clips are decoded, the error names the clip
    from jobs.copy_synthesis import _decode
    from schemas.configs import MelConfig
    from tasks.metrics.sources import AudioItem
    from tasks.vocoder.vocos import NeuralVocoder

    audio = np.sin(np.arange(16000, dtype=np.float32) / 10)
    audio[4000] = np.inf
    with pytest.raises(ValueError, match="clip take-7: the log-mel holds NaN or infinite"):
        _decode([AudioItem("take-7", audio, 16000)], NeuralVocoder(model, "tiny"), MelConfig())


def test_the_stft_loss_is_zero_for_the_same_audio_and_grows_with_the_error():
    y = torch.from_numpy(tone(440, 0.5))[None]
    assert float(multi_resolution_stft(y, y)) < 1e-5
    near, far = y + 0.01 * torch.randn_like(y), y + 0.3 * torch.randn_like(y)
    assert 0 < float(multi_resolution_stft(near, y)) < float(multi_resolution_stft(far, y))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from tasks.ingest import run_ingest

    tmp = tmp_path_factory.mktemp("vocoder-clips")
    for k, f in enumerate((220, 330, 440, 550)):
        write_wav(str(tmp / "raw" / "sine" / f"t{k}.wav"), tone(f, 3.0))
    return run_ingest(str(tmp / "raw"), str(tmp / "ingested"), IngestConfig(domain_pattern="^(?P<domain>[^/]+)/")).clips_url


def _fit(cfg: VocoderTrainConfig, out: str) -> dict:
    from ray_actors.solver import fit

    card = VocoderCard(mel=cfg.mel, clips_urls=cfg.clips_urls, train_config=cfg.model_dump(mode="json"))
    fit(cfg, TrainLogistics(num_workers=0, out_url=out), out, card, None, None)
    run = Storage(out)
    return load_train_state(run.read_bytes(json.loads(run.read_bytes(TrainRunLayout.LATEST))["checkpoint"]))


@pytest.mark.parametrize("adversarial", [0.0, 1.0], ids=["spectral", "adversarial"])
def test_training_is_deterministic_and_a_resumed_run_equals_an_unbroken_one(clips, tmp_path, monkeypatch, adversarial):
    """With discriminators too: their weights and optimizer are part of the checkpoint, so a
    resumed adversarial run ends where the unbroken one does, discriminators included."""
    import ray_actors.solver as solver

    cfg = tiny_cfg(clips, adversarial_weight=adversarial)
    whole = _fit(cfg, str(tmp_path / "whole"))
    assert whole["step"] == 20 and len(whole["history"]["val_loss"]) == 2
    assert all(np.isfinite(whole["history"]["loss"]))
    assert ("discriminator" in whole) == bool(adversarial)
    assert len(whole["history"].get("d_loss", [])) == (20 if adversarial else 0)
    again = _fit(cfg, str(tmp_path / "again"))
    real, calls = solver.optimise, []
    per_step = 2 if adversarial else 1  # the generator's step, then the discriminators'

    def crash_in_step_13(*a, **k):  # dies after the step-10 checkpoint, like a killed worker
        calls.append(1)
        if len(calls) == 12 * per_step + 1:
            raise RuntimeError("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(solver, "optimise", crash_in_step_13)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(cfg, str(tmp_path / "crashed"))
    monkeypatch.setattr(solver, "optimise", real)
    assert json.loads(Storage(str(tmp_path / "crashed")).read_bytes(TrainRunLayout.LATEST))["step"] == 10
    resumed = _fit(cfg, str(tmp_path / "crashed"))
    for other in (again, resumed):
        assert all(torch.equal(whole["ema"][k], other["ema"][k]) for k in whole["ema"])
        assert other["history"]["loss"] == whole["history"]["loss"]
        if adversarial:
            assert all(torch.equal(whole["discriminator"][k], other["discriminator"][k]) for k in whole["discriminator"])
            assert other["history"]["d_loss"] == whole["history"]["d_loss"]
    assert Storage(str(tmp_path / "whole")).find("samples"), "previews are written at checkpoints"


def _inconsistency(model, mag: torch.Tensor, phase: torch.Tensor, length: int) -> float:
    """How far the output's own STFT magnitude is from the magnitude it was made from."""
    n, hop = model.cfg.n_fft, model.cfg.mel.hop_length_samples
    y = model.synthesise(mag, phase, length)
    s = torch.stft(y, n, hop, n, model.window, center=True, pad_mode="constant", return_complex=True).abs()
    return float((s - mag).norm() / mag.norm())


def test_the_consistency_projection_keeps_a_real_signal_and_removes_inconsistency():
    """Griffin & Lim's projection (tasks/vocoder/vocos.py) is idempotent on a consistent
    spectrogram (the STFT of a real signal comes back as that signal), and on random phases it
    brings the output's magnitude closer to the one predicted (their eq. 6 never increases it)."""
    cfgs = {k: tiny_cfg("x").vocos().model_copy(update={"consistency_iters": k}) for k in (0, 1, 3)}
    models = {k: build_model(c) for k, c in cfgs.items()}
    m0 = models[0]
    n, hop, length = m0.cfg.n_fft, HOP, 20 * HOP
    x = torch.from_numpy(tone(440, length / 16000) + 0.3 * tone(660, length / 16000))[None]
    spec = torch.stft(x, n, hop, n, m0.window, center=True, pad_mode="constant", return_complex=True)
    for m in models.values():
        assert torch.allclose(m.synthesise(spec.abs(), spec.angle(), length), x, atol=1e-4)
    g = torch.Generator().manual_seed(0)
    mag = spec.abs() + 0.05
    phase = (torch.rand(spec.shape, generator=g) * 2 - 1) * torch.pi
    errors = [_inconsistency(models[k], mag, phase, length) for k in (0, 1, 3)]
    assert errors[0] > errors[1] > errors[2], errors


def test_a_checkpoint_saved_before_the_projection_decodes_as_it_did():
    """Old checkpoints carry no `consistency_iters`: they load with 0 (their decode unchanged);
    the presets train with the projection in the graph."""
    from schemas.vocoder import VocosConfig

    assert VocosConfig().consistency_iters == 0 and VocosConfig().min_frequency_hz == 0
    assert all(tiny_cfg("x", preset=p).vocos().consistency_iters == 1 for p in ("tiny", "cpu", "gpu"))
    # the presets' head is silent at and below the frame rate (50 Hz, whose bin locks), and only there
    from schemas.vocoder import MIN_FREQUENCY_HZ

    assert 50 < MIN_FREQUENCY_HZ < 65.4  # above the frame rate, below cello's C2
    model = build_model(tiny_cfg("x").vocos())
    mag, _ = model.spectrum(torch.randn(1, 128, 12))
    hz = torch.arange(mag.shape[1]) * 16000 / model.cfg.n_fft
    assert bool((mag[0, hz < MIN_FREQUENCY_HZ] == 0).all()) and bool((mag[0, hz >= MIN_FREQUENCY_HZ] > 0).all())
    old = build_model(tiny_cfg("x").vocos().model_copy(update={"min_frequency_hz": 0.0}))
    assert bool((old.spectrum(torch.randn(1, 128, 12))[0] > 0).all())


def test_fine_tuning_starts_from_the_named_model_and_refuses_another_kind(clips, tmp_path, monkeypatch):
    """`init_from` (train-vocoder --init-from): the run starts from that model's weights, pinned by
    checksum in the run's identity; a denoiser, or a vocoder of another size, is refused by name."""
    from infra.settings import get_settings
    from jobs.train import pin_init
    from ray_actors.solver import _restore
    from tasks.builders import make_kind, training_data
    from tasks.diffusion.checkpoint import ema_checkpoint_bytes

    base = _fit(tiny_cfg(clips), str(tmp_path / "base"))
    weights = tmp_path / "weights" / "vocoder"
    weights.mkdir(parents=True)
    (weights / "model.pt").write_bytes(ema_checkpoint_bytes(base))
    ship_card(weights)  # a shipped file is loaded only with its card's checksum
    monkeypatch.setenv("REINSTRUMENT_SHIPPED_DIR", str(tmp_path / "weights"))
    get_settings.cache_clear()
    try:
        cfg = pin_init(tiny_cfg(clips, init_from="shipped:vocoder", steps=4, checkpoint_every=2))
        assert cfg.init_from.startswith("shipped:vocoder@") and cfg.config_hash() != tiny_cfg(clips).config_hash()
        card = VocoderCard(mel=cfg.mel, clips_urls=cfg.clips_urls, train_config=cfg.model_dump(mode="json"))
        kind = make_kind(cfg, card, training_data(cfg, card))
        start = _restore(kind, cfg, card.model_dump(mode="json"), Storage(str(tmp_path / "ft")),
                         ema_checkpoint_bytes(base))
        assert all(torch.equal(start.model.state_dict()[k], base["ema"][k]) for k in base["ema"])
        assert all(torch.equal(start.ema.state_dict()[k], base["ema"][k]) for k in base["ema"])
        tuned = _fit(cfg, str(tmp_path / "ft"))
        assert tuned["step"] == 4 and not all(torch.equal(tuned["ema"][k], base["ema"][k]) for k in base["ema"])

        bigger = tiny_cfg(clips, architecture={"dim": 24}, init_from=cfg.init_from)
        with pytest.raises(ValueError, match="another architecture.*use the preset"):
            _restore(make_kind(bigger, card, training_data(bigger, card)), bigger, card.model_dump(mode="json"),
                     Storage(str(tmp_path / "x")), ema_checkpoint_bytes(base))
        # a head grown by an MLP (`head_hidden`) starts from the same model: what it shares is loaded,
        # the new layers start where the decode is unchanged, and they then train
        grown = tiny_cfg(clips, architecture={"head_hidden": 12}, init_from=cfg.init_from, steps=4, checkpoint_every=2)
        state = _restore(make_kind(grown, card, training_data(grown, card)), grown, card.model_dump(mode="json"),
                         Storage(str(tmp_path / "g")), ema_checkpoint_bytes(base))
        assert all(torch.equal(state.model.state_dict()[k], base["ema"][k]) for k in base["ema"])
        assert set(state.model.state_dict()) - set(base["ema"]) == set(state.model.growth()) != set()
        x = torch.randn(1, 128, 9) - 4
        plain = build_model(tiny_cfg(clips).vocos())
        plain.load_state_dict(base["ema"])
        with torch.no_grad():
            assert all(torch.equal(a, b) for a, b in zip(plain.spectrum(x), state.model.spectrum(x)))
        trained = _fit(grown, str(tmp_path / "g"))
        assert float(trained["ema"]["head_mlp.2.weight"].abs().max()) > 0
        from schemas.diffusion import ModelConfig, unet_preset
        from tasks.diffusion.checkpoint import checkpoint_bytes

        denoiser = checkpoint_bytes(build_model(ModelConfig(unet=unet_preset("tiny"))), {"kind": "denoiser"})
        with pytest.raises(ValueError, match="is a denoiser model; this run trains a vocoder"):
            _restore(kind, tiny_cfg(clips, init_from="models:/reinstrument-flute/1"), card.model_dump(mode="json"),
                     Storage(str(tmp_path / "y")), denoiser)
    finally:
        get_settings.cache_clear()


def test_the_training_targets_lose_only_what_the_head_may_not_make():
    """Below the passband the targets are silenced (else their sub-bass pulls the lowest open bin
    into a frame-rate tone); above it they are untouched."""
    from tasks.vocoder.kind import highpass

    t = torch.arange(16000) / 16000
    low, high = torch.sin(2 * torch.pi * 30 * t), torch.sin(2 * torch.pi * 440 * t)
    out = highpass((low + high)[None], 50.0, 16000)[0]
    assert torch.allclose(out, high, atol=1e-4)


def test_training_with_pghi_phase_judges_the_audio_decoding_makes():
    """train_phase="pghi": the losses and discriminators see exactly what `phase` pghi decodes
    (PGHI's phase from the head's magnitude, then the projection), and gradients still reach the
    head's magnitude; the head's own phase then gets gradients only from its spectrum losses."""
    from tasks.vocoder.kind import VocoderLoss

    torch.manual_seed(0)
    cfg = tiny_cfg("x", adversarial_weight=1.0, train_phase="pghi")
    model = build_model(cfg.vocos().model_copy(update={"phase": "pghi"}))
    disc = build_model(cfg.discriminator)
    t = torch.arange(16000 + 8 * HOP) / 16000
    audio = (0.3 * torch.sin(2 * torch.pi * 440 * t) * torch.linspace(0.2, 1, len(t)))[None].repeat(2, 1)
    from tasks.features import LogMel

    logmel = LogMel(cfg.mel)(audio).clone()
    loss = VocoderLoss(model, cfg.mel_loss_weight, cfg.phase_loss_weight, disc, 1.0, 2.0, train_phase="pghi")
    value = loss(logmel, audio).mean()
    with torch.no_grad():
        decoded = model(logmel)
    judged = loss.last["fake"]
    assert torch.allclose(judged, decoded[:, :judged.shape[-1]], atol=1e-6)
    value.backward()
    n_bins = cfg.vocos().n_fft // 2 + 1
    assert model.head.weight.grad[:n_bins].abs().sum() > 0  # the magnitude rows learn from the output's losses
    head_phase = cfg.vocos().model_copy(update={"phase": "head"})
    model_head = build_model(head_phase)
    model_head.load_state_dict(model.state_dict())
    loss_head = VocoderLoss(model_head, cfg.mel_loss_weight, cfg.phase_loss_weight, disc, 1.0, 2.0)
    loss_head(logmel, audio)
    assert not torch.allclose(loss_head.last["fake"], judged, atol=1e-3)  # the head's phase makes other audio
