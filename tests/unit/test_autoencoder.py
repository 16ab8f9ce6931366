"""The mel autoencoder (tasks/autoencoder): shapes for any length, a deterministic encoding, the KL
term against torch's closed form, bad input refused, configs that cannot describe a broken
latent, the wrong kind of checkpoint refused by name, training that resumes exactly, and the
transformer's latent path: tau_init = 1 returns the encoded guide bit for bit, a mismatched
autoencoder is refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from schemas.autoencoder import AUTOENCODER_PRESETS, AutoencoderConfig, AutoencoderTrainConfig
from schemas.configs import FeatureConfig, IngestConfig, MelConfig
from schemas.diffusion import ModelConfig, SamplerConfig, WarmStartConfig, WindowConfig, unet_preset
from schemas.records import AutoencoderCard, ModelCard, TrainRunLayout
from schemas.training import TrainLogistics
from schemas.transform import TransformConfig
from infra.storage import Storage
from tasks.autoencoder.model import MelAutoencoder, kl_divergence
from tasks.builders import LoadedAutoencoder, LoadedModel, build_model, load_autoencoder, load_model, load_vocoder
from tasks.diffusion.checkpoint import checkpoint_bytes, load_train_state
from tasks.diffusion.train_data import normalise
from tasks.diffusion.windows import transform_long
from tasks.features import LogMel
from tasks.transform import Transformer
from tests.conftest import tone, write_wav

MEL = MelConfig()
TINY = AutoencoderConfig(**{"latent_channels": 8, "time_downsample": 4, "dim": 16, "intermediate": 32, "blocks": 1})


@pytest.fixture(scope="module")
def ae() -> MelAutoencoder:
    torch.manual_seed(0)
    return MelAutoencoder(TINY).eval()


@pytest.mark.parametrize("frames", [1, 3, 4, 37, 128])
def test_any_length_encodes_to_ceil_frames_over_r_and_decodes_back_to_its_length(ae, frames):
    x = torch.randn(2, MEL.n_mels, frames) - 5
    mean, logvar = ae.encode(x)
    assert mean.shape == logvar.shape == (2, 8, -(-frames // 4))
    assert ae.decode(mean, frames).shape == (2, MEL.n_mels, frames)
    assert ae(x).shape == x.shape


def test_the_encoding_is_the_posterior_mean_a_pure_function_of_the_log_mel(ae):
    x = torch.randn(3, MEL.n_mels, 40) - 5
    a, b = ae.encode(x)[0], ae.encode(x.clone())[0]
    assert torch.equal(a, b)


def test_the_kl_term_is_the_closed_form_of_two_gaussians():
    mean, logvar = torch.randn(4, 8, 10), torch.randn(4, 8, 10)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(q, p).flatten(1).mean(1)
    torch.testing.assert_close(kl_divergence(mean, logvar), expected)
    assert float(kl_divergence(torch.zeros(1, 8, 3), torch.zeros(1, 8, 3)).abs().max()) == 0.0


def test_bad_input_is_refused_with_what_was_expected(ae):
    with pytest.raises(ValueError, match="NaN or infinite"):
        ae.encode(torch.full((1, MEL.n_mels, 8), float("nan")))
    with pytest.raises(ValueError, match=r"\[batch, 128, frames\]"):
        ae.encode(torch.zeros(1, 64, 8))
    with pytest.raises(ValueError, match=r"\[batch, 8, frames\]"):
        ae.decode(torch.zeros(1, 4, 8))


def test_configs_refuse_what_would_make_a_broken_latent():
    with pytest.raises(ValueError, match="power of 2"):
        AutoencoderConfig(time_downsample=3)
    with pytest.raises(ValueError, match="multiple of time_downsample"):
        AutoencoderTrainConfig(clips_urls=("x",), **{**AUTOENCODER_PRESETS["tiny"], "segment_frames": 30})
    with pytest.raises(ValueError, match="needs an encoder"):
        FeatureConfig(kind="latent")
    with pytest.raises(ValueError, match="needs an encoder"):
        FeatureConfig(encoder="models:/reinstrument-autoencoder/1")
    cpu = AutoencoderTrainConfig(clips_urls=("x",), **AUTOENCODER_PRESETS["cpu"]).autoencoder()
    assert cpu.compression >= 8 and cpu.values_per_second == 6400 / cpu.compression


def test_each_loader_refuses_the_other_kinds_by_name(ae):
    data = checkpoint_bytes(ae, {"kind": "autoencoder"} | AutoencoderCard(mel=MEL, latent_channels=8, time_downsample=4).model_dump(mode="json"))
    assert isinstance(load_autoencoder(data, "ae/1").model, MelAutoencoder)
    with pytest.raises(ValueError, match="ae/1 is not a denoiser but an? autoencoder model"):
        load_model(data, "ae/1")
    with pytest.raises(ValueError, match="ae/1 is not a vocoder"):
        load_vocoder(data, "ae/1")
    denoiser = checkpoint_bytes(build_model(ModelConfig(unet=unet_preset("tiny"))), {"kind": "denoiser"})
    with pytest.raises(ValueError, match="d/1 is not an autoencoder"):
        load_autoencoder(denoiser, "d/1")
    with pytest.raises(ValueError, match="encodes other log-mels"):
        load_autoencoder(data, "ae/1", MelConfig(n_mels=64))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from tasks.ingest import run_ingest

    tmp = tmp_path_factory.mktemp("ae-clips")
    for k, f in enumerate((220, 330, 440, 550)):
        write_wav(str(tmp / "raw" / "sine" / f"t{k}.wav"), tone(f, 3.0))
    return run_ingest(str(tmp / "raw"), str(tmp / "ingested"), IngestConfig()).clips_url


def _fit(cfg: AutoencoderTrainConfig, out: str) -> dict:
    from ray_actors.solver import fit

    arch = cfg.autoencoder()
    card = AutoencoderCard(mel=cfg.mel, latent_channels=arch.latent_channels, time_downsample=arch.time_downsample,
                           clips_urls=cfg.clips_urls, train_config=cfg.model_dump(mode="json"))
    fit(cfg, TrainLogistics(num_workers=0, out_url=out), out, card, None, None)
    run = Storage(out)
    return load_train_state(run.read_bytes(json.loads(run.read_bytes(TrainRunLayout.LATEST))["checkpoint"]))


def test_training_lowers_the_loss_and_a_resumed_run_equals_an_unbroken_one(clips, tmp_path, monkeypatch):
    import ray_actors.solver as solver

    cfg = AutoencoderTrainConfig(clips_urls=(clips,), **AUTOENCODER_PRESETS["tiny"])
    whole = _fit(cfg, str(tmp_path / "whole"))
    h = whole["history"]
    assert whole["step"] == 20 and np.mean(h["loss"][-5:]) < np.mean(h["loss"][:5])
    real, calls = solver.optimise, []

    def crash_in_step_13(*a, **k):  # dies after the step-10 checkpoint, like a killed worker
        calls.append(1)
        if len(calls) == 13:
            raise RuntimeError("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(solver, "optimise", crash_in_step_13)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(cfg, str(tmp_path / "crashed"))
    monkeypatch.setattr(solver, "optimise", real)
    resumed = _fit(cfg, str(tmp_path / "crashed"))
    assert all(torch.equal(whole["ema"][k], resumed["ema"][k]) for k in whole["ema"])
    assert resumed["history"]["loss"] == h["loss"]
    assert Storage(str(tmp_path / "whole")).find("samples"), "previews are written at checkpoints"


def test_a_decoder_fine_tune_against_the_mel_discriminator_keeps_the_encoder_bit_for_bit(clips, tmp_path, monkeypatch):
    """freeze_encoder + adversarial_weight: the decoder learns against the PatchGAN (its own loss
    history logged), the encoder's weights and so every latent stay exactly the start's, and the
    config refuses a frozen encoder with nothing to start from."""
    from infra import tracking

    torch.manual_seed(3)
    start = AutoencoderTrainConfig(clips_urls=(clips,), **AUTOENCODER_PRESETS["tiny"]).autoencoder()
    base = MelAutoencoder(start)
    monkeypatch.setattr(tracking, "model_checkpoint", lambda uri: checkpoint_bytes(base, {"kind": "autoencoder"}))
    cfg = AutoencoderTrainConfig(clips_urls=(clips,), **{**AUTOENCODER_PRESETS["tiny"], "steps": 10},
                                 init_from="models:/reinstrument-autoencoder/1", freeze_encoder=True,
                                 adversarial_weight=0.1, discriminator={"channels": (4, 8)})
    tuned = _fit(cfg, str(tmp_path / "tuned"))
    assert len(tuned["history"]["d_loss"]) == 10 and "discriminator" in tuned
    enc = {k: v for k, v in base.state_dict().items() if k.startswith("encoder.")}
    for weights in (tuned["model"], tuned["ema"]):
        assert all(torch.equal(weights[k], v) for k, v in enc.items()), "the frozen encoder moved"
    dec = [k for k in tuned["model"] if k.startswith("decoder.")]
    assert any(not torch.equal(tuned["model"][k], base.state_dict()[k]) for k in dec), "the decoder never trained"
    with pytest.raises(ValueError, match="freeze_encoder needs init_from"):
        AutoencoderTrainConfig(clips_urls=(clips,), freeze_encoder=True)


@pytest.fixture(scope="module")
def latent_model(ae) -> tuple[LoadedModel, LoadedAutoencoder]:
    torch.manual_seed(1)
    m = build_model(ModelConfig(unet=unet_preset("tiny", n_mels=8))).eval()
    card = ModelCard(mel=MEL, mean=[0.1] * 8, std=[0.7] * 8, domain="flute", n_mels=8, representation="latent",
                     encoder="models:/reinstrument-autoencoder/1", time_downsample=4)
    ae_card = AutoencoderCard(mel=MEL, latent_channels=8, time_downsample=4)
    return LoadedModel(m, card, "reinstrument-flute-latent/1"), LoadedAutoencoder(ae, ae_card, "reinstrument-autoencoder/1")


def _cfg(t_init: float, window_frames: int = 512, overlap_frames: int = 0) -> TransformConfig:
    return TransformConfig(model="m", warm=WarmStartConfig(t_init=t_init), sampler=SamplerConfig(steps=6),
                           window=WindowConfig(window_frames=window_frames, overlap_frames=overlap_frames), vocoder_iters=2)


def test_latent_warm_start_at_tau_1_returns_the_encoded_guide_bit_for_bit(latent_model):
    model, ae = latent_model
    audio = tone(440, 4.0).astype(np.float32)
    tr = Transformer(_cfg(1.0), model, autoencoder=ae)
    guides, _ = tr.guides([audio], [16000])
    expected = normalise(ae.model.encode(LogMel(MEL)(torch.from_numpy(audio)[None]))[0][0], model.card.mean, model.card.std)
    assert torch.equal(guides[0], expected) and guides[0].shape == (8, -(-201 // 4))
    out = transform_long(tr._windows, guides, ["c"], tr.window, 0, max_batch_windows=tr.batch_windows)
    assert torch.equal(out[0], guides[0])
    y = tr.transform(["c"], [audio], [16000])[0].audio
    assert y.shape == audio.shape and np.isfinite(y).all()
    # a vocoder set to PGHI decodes a latent model's outputs with its head's phase (the same weights)
    from schemas.vocoder import VOCODER_PRESETS, VocoderTrainConfig
    from tasks.vocoder.vocos import NeuralVocoder

    vocos = build_model(VocoderTrainConfig(clips_urls=("x",), **VOCODER_PRESETS["tiny"]).vocos()).eval()
    assert vocos.cfg.phase == "pghi"
    decoded = Transformer(_cfg(1.0).model_copy(update={"vocoder": "models:/v/1"}), model, autoencoder=ae,
                          vocoder=NeuralVocoder(vocos, "v/1")).vocoder
    assert decoded.model.cfg.phase == "head" and decoded.model.embed.weight is vocos.embed.weight
    # and away from tau_init = 1 the model changes it
    moved = Transformer(_cfg(0.3), model, autoencoder=ae)
    out = transform_long(moved._windows, guides, ["c"], moved.window, 0, max_batch_windows=moved.batch_windows)
    assert not torch.equal(out[0], guides[0])


def test_a_latent_model_needs_its_own_autoencoder_and_windows_of_whole_latent_frames(latent_model, ae):
    model, loaded = latent_model
    with pytest.raises(ValueError, match="is a latent model: pass its autoencoder"):
        Transformer(_cfg(0.5), model)
    other = LoadedAutoencoder(MelAutoencoder(TINY.model_copy(update={"latent_channels": 4})).eval(),
                              AutoencoderCard(mel=MEL, latent_channels=4, time_downsample=4), "reinstrument-autoencoder/2")
    with pytest.raises(ValueError, match="makes 4 x 1/4 latents"):
        Transformer(_cfg(0.5), model, autoencoder=other)
    with pytest.raises(ValueError, match="multiples of .* time_downsample=4"):
        Transformer(_cfg(0.5, window_frames=130, overlap_frames=30), model, autoencoder=loaded)
    mel_model = LoadedModel(build_model(ModelConfig(unet=unet_preset("tiny"))).eval(),
                            ModelCard(mel=MEL, mean=[-4.0] * 128, std=[2.0] * 128, domain="flute", n_mels=128), "m/1")
    with pytest.raises(ValueError, match="models log-mels; it takes no autoencoder"):
        Transformer(_cfg(0.5), mel_model, autoencoder=loaded)
