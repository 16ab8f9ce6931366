"""The pure pieces of a training run: schedules, EMA, crops, validation, row order, state."""
import math

import numpy as np
import pytest
import torch

from schemas.training import TRAIN_PRESETS, TrainConfig, TrainLogistics
from schemas.diffusion import ModelConfig
from tasks.builders import build_model, load_checkpoint_bytes
from tasks.diffusion.checkpoint import (ema_checkpoint_bytes,
                                        load_train_state, train_state_bytes)
from tasks.diffusion.train import (autocast_dtype_for, crop_batch, ema_update, lr_at, step_generator,
                                   train_step, validation_loss, validation_sigmas)
from tasks.diffusion.train_data import denormalise, normalise, segments_tensor
from schemas.diffusion import unet_preset


def test_lr_schedule_warms_up_then_decays():
    assert lr_at(0, 1.0, 10, 100, "cosine") == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100, "cosine") == pytest.approx(1.0)
    assert lr_at(10, 1.0, 10, 100, "cosine") == pytest.approx(1.0)
    assert lr_at(55, 1.0, 10, 100, "cosine") == pytest.approx(0.5)
    assert lr_at(100, 1.0, 10, 100, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_at(80, 1.0, 10, 100, "constant") == 1.0


def test_ema_moves_by_one_minus_decay():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = a.weight.detach().clone()
    ema_update(a, b, 0.9)
    assert torch.allclose(a.weight, 0.9 * before + 0.1 * b.weight)


def test_crops_stay_inside_valid_frames_and_mask_padding():
    seg = torch.arange(2 * 3 * 16, dtype=torch.float32).reshape(2, 3, 16)
    valid = torch.tensor([16, 5])
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        x, m, c = crop_batch(seg, valid, torch.tensor([0, 1]), 8, g, cond=-seg)
        assert torch.equal(c, -x)
        assert x.shape == (2, 3, 8) and m.shape == x.shape
        assert m[0].all() and m[1, :, :5].all() and not m[1, :, 5:].any()
        a = int(x[0, 0, 0])
        assert 0 <= a <= 8 and torch.equal(x[0], seg[0, :, a:a + 8])


def test_step_generators_are_reproducible_and_distinct():
    draw = lambda s, r: torch.randn(3, generator=step_generator(7, s, r))  # noqa: E731
    assert torch.equal(draw(5, 0), draw(5, 0))
    assert not torch.equal(draw(5, 0), draw(5, 1)) and not torch.equal(draw(5, 0), draw(6, 0))


def test_validation_sigmas_are_lognormal_quantiles_and_loss_is_deterministic():
    s = validation_sigmas(1001, -0.5, 1.2)
    assert float(s.log().median()) == pytest.approx(-0.5, abs=1e-4)
    assert float(s.log().std()) == pytest.approx(1.2, rel=0.02)
    torch.manual_seed(0)
    m = build_model(ModelConfig(unet=unet_preset("tiny", n_mels=16)))
    seg, valid = torch.randn(6, 16, 40), torch.tensor([40, 40, 40, 40, 30, 12])
    assert validation_loss(m, seg, valid, 32) == validation_loss(m, seg, valid, 32)


def test_rows_are_ordered_by_feature_id_and_normalised():
    ids = ["c", "a", "b"]
    vals = [np.full(6, i, np.float32) for i in (2.0, 0.0, 1.0)]
    mean, std = np.array([1.0, 1.0], np.float32), np.array([2.0, 2.0], np.float32)
    x, valid, order = segments_tensor(ids, vals, [2] * 3, [3] * 3, [3, 2, 1], mean, std)
    assert order == ["a", "b", "c"] and valid.tolist() == [2, 1, 3]
    assert torch.allclose(x[:, 0, 0], torch.tensor([-0.5, 0.0, 0.5]))
    back = denormalise(x[2], mean, std)
    assert torch.allclose(back, torch.full((2, 3), 2.0)) and torch.allclose(normalise(back, mean, std), x[2])
    with pytest.raises(ValueError, match="expected 2x3"):
        segments_tensor(ids, vals[:2] + [np.zeros(8, np.float32)], [2, 2, 2], [3, 3, 4], [3] * 3, mean, std)


def test_train_state_round_trip_and_ema_export():
    torch.manual_seed(0)
    m = build_model(ModelConfig(unet=unet_preset("tiny", n_mels=16)))
    ema = build_model(ModelConfig(unet=unet_preset("tiny", n_mels=16)))
    opt = torch.optim.AdamW(m.parameters())
    state = load_train_state(train_state_bytes(m, ema, opt, 12, {"loss": [1.0]}, {"mean": [0.0]}))
    assert state["step"] == 12 and state["history"] == {"loss": [1.0]}
    exported, meta = load_checkpoint_bytes(ema_checkpoint_bytes(state))
    assert meta == {"mean": [0.0]}
    assert all(torch.equal(a, b) for a, b in zip(exported.state_dict().values(), ema.state_dict().values()))


def test_configs_reject_what_they_cannot_run():
    base = dict(domain="flute", features_url="/x")
    with pytest.raises(ValueError, match="unknown preset"):
        TrainConfig(**base, preset="huge")
    with pytest.raises(ValueError, match="divisible"):
        TrainConfig(**base, preset="tiny", crop_frames=30)
    with pytest.raises(ValueError, match="Extra inputs"):
        TrainConfig(**base, stepz=3)
    with pytest.raises(ValueError, match="num_workers"):
        TrainLogistics(out_url="/x", num_workers=0, use_gpu=True)
    for p in TRAIN_PRESETS.values():
        TrainConfig(**base, **p)


def test_timbre_probe_separates_two_spectral_envelopes():
    from tasks.timbre_probe import fit_probe, p_target

    rng = np.random.default_rng(0)
    env_a, env_b = np.linspace(0, -3, 16)[:, None], np.linspace(-3, 0, 16)[:, None]
    a = env_a + 0.3 * rng.standard_normal((40, 16, 20))
    b = env_b + 0.3 * rng.standard_normal((40, 16, 20))
    probe = fit_probe(a, b)
    assert p_target(probe, env_a + 0.3 * rng.standard_normal((10, 16, 20))).mean() > 0.9
    assert p_target(probe, env_b + 0.3 * rng.standard_normal((10, 16, 20))).mean() < 0.1
    assert math.isfinite(float(p_target(probe, a).mean()))


def test_precision_rule_and_a_bf16_step_on_cpu(monkeypatch):
    amx = bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert autocast_dtype_for("auto", "cuda") is torch.bfloat16
    assert autocast_dtype_for("auto", "cpu") is (torch.bfloat16 if amx else None)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN capped below AMX would emulate bf16: fp32
    assert autocast_dtype_for("auto", "cpu") is None and autocast_dtype_for("auto", "cuda") is torch.bfloat16
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_amx")
    assert autocast_dtype_for("auto", "cpu") is (torch.bfloat16 if amx else None)
    assert autocast_dtype_for("fp32", "cuda") is None and autocast_dtype_for("bf16", "cpu") is torch.bfloat16
    with pytest.raises(ValueError, match="expected auto, fp32 or bf16"):
        autocast_dtype_for("fp16", "cpu")
    # A bf16-autocast step keeps fp32 master weights and moves them like an fp32 step does.
    torch.manual_seed(0)
    model = build_model(ModelConfig(unet=unet_preset("tiny", n_mels=16)))
    y, sigma, noise = torch.randn(4, 16, 32), torch.full((4,), 0.5), torch.randn(4, 16, 32)
    moved = {}
    for dtype in (None, torch.bfloat16):
        m = build_model(ModelConfig(unet=unet_preset("tiny", n_mels=16)))
        m.load_state_dict(model.state_dict())
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        loss = train_step(m, opt, y, sigma=sigma, noise=noise, autocast_dtype=dtype)
        assert math.isfinite(loss) and all(p.dtype == torch.float32 for p in m.parameters())
        moved[dtype] = torch.cat([(p - q).flatten() for p, q in zip(m.parameters(), model.parameters())])
    cos = torch.nn.functional.cosine_similarity(moved[None], moved[torch.bfloat16], dim=0)
    assert cos > 0.95, f"bf16 update direction differs from fp32 (cosine {cos:.3f})"


def test_the_solvers_fused_step_follows_the_per_parameter_adamw_and_clipping():
    """The solver's optimizer (fused AdamW, foreach clipping) against torch's reference loop over
    parameters: the same trajectory over 20 clipped steps, and a state saved by the loop resumes fused."""
    from tasks.solver import adamw, settle_optimizer, optimise

    class Loss(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return (self.model(x) - x.flip(-1)).pow(2).mean(-1) * 50  # large enough that clipping acts

    def run(make_opt, resume_at=None):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 8))
        loss, opt = Loss(model), make_opt(model.parameters())
        x = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
        for step in range(20):
            if step == resume_at:  # a checkpoint of the reference loop, resumed by the solver's optimizer
                saved = opt.state_dict()
                opt = adamw(model.parameters(), lr=1e-2, weight_decay=0.01)
                opt.load_state_dict(saved)
                settle_optimizer(opt)
                assert all(g["fused"] for g in opt.param_groups)
            optimise(loss, opt, {"x": x}, max_grad_norm=0.5)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    reference = run(lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.01, foreach=False))
    fused = run(lambda ps: adamw(ps, lr=1e-2, weight_decay=0.01))
    resumed = run(lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.01, foreach=False), resume_at=10)
    start = run(lambda ps: adamw(ps, lr=0.0, weight_decay=0.0))  # lr 0: the initial weights
    assert (reference - start).abs().max() > 0.05  # the steps moved the weights
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(resumed, reference, rtol=0, atol=1e-5)
