"""The pure transformer (tasks/transform.py) with a randomly initialised tiny model: per-clip
determinism whatever the batch, tau_init=1 returning the guide's vocoded audio, tau_init=0 with
lambda=1 forgetting the guide, durations kept, bad input refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from schemas.configs import MelConfig
from schemas.diffusion import SamplerConfig, WarmStartConfig, WindowConfig, unet_preset
from schemas.transform import TransformConfig
from schemas.diffusion import ModelConfig
from tasks.builders import build_model
from tasks.builders import make_vocoder
from tasks.features import LogMel
from schemas.records import ModelCard
from tasks.builders import LoadedModel
from tasks.transform import Transformer, output_key

SR = 16000
MEL = MelConfig()


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    torch.manual_seed(0)
    m = build_model(ModelConfig(unet=unet_preset("tiny", n_mels=MEL.n_mels))).eval()
    card = ModelCard(mel=MEL, mean=[-4.0] * MEL.n_mels, std=[2.0] * MEL.n_mels, domain="flute", n_mels=MEL.n_mels)
    return LoadedModel(m, card, "reinstrument-flute/1")


def clips(n: int, seconds: float = 3.0) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * SR)) / SR
    return [(0.2 * np.sin(2 * np.pi * rng.uniform(200, 800) * t)).astype(np.float32) for _ in range(n)]


def tr(model, t_init=0.6, lam=1.0, **kw) -> Transformer:
    cfg = TransformConfig(model="m", warm=WarmStartConfig(t_init=t_init, lam=lam),
                          sampler=SamplerConfig(steps=6), window=WindowConfig(window_frames=64, overlap_frames=16),
                          vocoder_iters=4)
    return Transformer(cfg, model, batch_windows=kw.get("batch_windows", 4))


def test_a_clip_alone_equals_the_clip_in_a_batch_of_8(model):
    audio = clips(8)
    ids = [f"clip-{i}" for i in range(8)]
    batch = tr(model).transform(ids, audio, [SR] * 8)
    alone = tr(model).transform(ids[5:6], audio[5:6], [SR])
    np.testing.assert_array_equal(alone[0].audio, batch[5].audio)
    # another clip ID is another noise draw
    other = tr(model).transform(["another"], audio[5:6], [SR])
    assert not np.array_equal(other[0].audio, alone[0].audio)


def test_durations_are_kept_for_any_length_and_rate(model):
    audio = [clips(1, 1.3)[0], clips(1, 7.7)[0]]
    outs = tr(model).transform(["a", "b"], audio, [SR, SR])
    assert [len(o.audio) for o in outs] == [len(a) for a in audio]
    import librosa
    up = librosa.resample(audio[0], orig_sr=SR, target_sr=44100)
    out = tr(model).transform(["a"], [up], [44100])[0]
    assert out.sample_rate_hz == SR and abs(len(out.audio) - len(audio[0])) <= MEL.hop_length_samples


def test_t_init_1_returns_the_vocoded_guide(model):
    audio = clips(2)
    outs = tr(model, t_init=1.0).transform(["a", "b"], audio, [SR, SR])
    vocoder = make_vocoder("griffin-lim", MEL, n_iter=4, seed=0)
    for a, o in zip(audio, outs):
        ref = vocoder(LogMel(MEL)(torch.from_numpy(a)[None])[0].numpy())[: len(a)]
        assert np.abs(o.audio - ref).max() < 1e-3 * max(1.0, np.abs(ref).max())


def test_t_init_0_lam_1_forgets_the_guide(model):
    a, b = clips(2)
    # same clip ID -> same noise; different guides. The guide survives only as g*s/sqrt(s^2+80^2).
    out_a = tr(model, t_init=0.0).transform(["same"], [a], [SR])[0].audio
    out_b = tr(model, t_init=0.0).transform(["same"], [b], [SR])[0].audio
    warm_a = tr(model, t_init=0.5).transform(["same"], [a], [SR])[0].audio
    warm_b = tr(model, t_init=0.5).transform(["same"], [b], [SR])[0].audio
    # Compared as log-mels: Griffin-Lim's phase makes waveforms incomparable sample by sample.
    mel = lambda y: LogMel(MEL)(torch.from_numpy(y)[None])[0].numpy()  # noqa: E731
    cold_gap = np.abs(mel(out_a) - mel(out_b)).mean()
    warm_gap = np.abs(mel(warm_a) - mel(warm_b)).mean()
    guide_gap = np.abs(mel(a) - mel(b)).mean()
    print(f"\nlog-mel gap between two guides {guide_gap:.3f}; outputs at t_init 0.5 {warm_gap:.3f}, at 0 {cold_gap:.4f}")
    assert cold_gap < 0.1 * warm_gap and cold_gap < 0.1 * guide_gap


def test_bad_input_and_keys(model):
    bad = clips(1)[0]
    bad[10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tr(model).transform(["x"], [bad], [SR])
    cfg = TransformConfig(model="m")
    k = output_key("clip", "reinstrument-flute/1", None, cfg)
    assert k != output_key("clip", "reinstrument-flute/2", None, cfg)
    assert k != output_key("clip", "reinstrument-flute/1", None, cfg.model_copy(update={"seed": 1}))
    with pytest.raises(ValueError, match="ddib.*source_model"):
        TransformConfig(model="m", method="ddib")
    with pytest.raises(ValueError, match="needs a conditional"):
        Transformer(TransformConfig(model="m", method="conditional"), model)


def test_a_config_without_a_sampler_gets_the_recommended_one_and_ddib_gets_heun():
    from schemas.diffusion import DDIB_SAMPLER, RECOMMENDED_SAMPLER
    from schemas.sweep import SweepConfig
    from schemas.transform import TransformConfig

    assert TransformConfig(model="m").sampler == RECOMMENDED_SAMPLER == SweepConfig(model="m").sampler
    assert RECOMMENDED_SAMPLER.name == "dpmpp_2m" and RECOMMENDED_SAMPLER.solver_steps == 6
    ddib = TransformConfig(model="m", method="ddib", source_model="s", warm={"t_init": 0.5})
    assert ddib.sampler == DDIB_SAMPLER == SweepConfig(model="m", method="ddib", source_model="s").sampler
    # some fields over the default; another solver from its own defaults; an explicit null kept
    assert TransformConfig(model="m", sampler={"steps": 20}).sampler == RECOMMENDED_SAMPLER.model_copy(update={"steps": 20})
    assert TransformConfig(model="m", sampler={"name": "heun"}).sampler.solver_steps is None
    assert TransformConfig(model="m", sampler={"name": "dpmpp_2m", "solver_steps": None}).sampler.solver_steps is None
    # the filled-in sampler is part of the identity: a JSON round trip keeps it and its hash
    cfg = TransformConfig(model="m")
    assert TransformConfig.model_validate_json(cfg.model_dump_json()).config_hash() == cfg.config_hash()
    # churn is Heun's alone: a config that sets it (as the README's examples from before did) means Heun
    assert TransformConfig(model="m", sampler={"S_churn": 7.0}).sampler == SamplerConfig(S_churn=7.0)
    with pytest.raises(ValueError, match="churn is EDM Algorithm 2"):
        TransformConfig(model="m", sampler={"name": "dpmpp_2m", "S_churn": 7.0})
