"""EDM preconditioning, the U-Net presets, checkpoints and single-batch overfitting."""
import math

import pytest
import torch

from schemas.diffusion import EDMConfig, UNetConfig, unet_preset
from schemas.diffusion import ModelConfig
from tasks.builders import build_model, load_checkpoint_bytes
from tasks.diffusion.checkpoint import checkpoint_bytes
from tasks.diffusion.precond import EDMPrecond
from tasks.diffusion.train import train_step
from tasks.diffusion.unet import UNet


class Probe(torch.nn.Module):
    """F that records its inputs and returns a constant, to read the preconditioning off D."""

    def forward(self, x_in, c_noise, cond):
        self.seen = (x_in, c_noise)
        return torch.ones_like(x_in)


def test_preconditioning_is_table_1():
    cfg = EDMConfig(sigma_data=0.7)
    d = EDMPrecond(Probe(), cfg)
    x, sigma = torch.full((1, 3, 4), 2.0, dtype=torch.float64), 1.3
    out = d(x, sigma)
    sd2, s2 = 0.49, sigma ** 2
    c_skip, c_out, c_in = sd2 / (s2 + sd2), sigma * 0.7 / math.sqrt(s2 + sd2), 1 / math.sqrt(s2 + sd2)
    assert torch.allclose(out, torch.full_like(x, c_skip * 2 + c_out))
    assert torch.allclose(d.net.seen[0], torch.full_like(x, c_in * 2))
    assert math.isclose(float(d.net.seen[1]), math.log(sigma) / 4, rel_tol=1e-12)
    assert math.isclose(float(d.loss_weight(torch.tensor(sigma))), (s2 + sd2) / (sigma * 0.7) ** 2, rel_tol=1e-6)
    # ln(sigma) ~ N(P_mean, P_std^2)
    ln = d.sample_sigma(20000, torch.Generator().manual_seed(0)).log()
    assert abs(float(ln.mean()) - cfg.P_mean) < 0.05 and abs(float(ln.std()) - cfg.P_std) < 0.05


def test_loss_mask_ignores_padded_frames():
    """With an element-wise F (the probe), garbage in masked frames must not move the loss."""
    probe = EDMPrecond(Probe(), EDMConfig())
    y, noise = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    mask = torch.ones_like(y)
    mask[..., 20:] = 0
    sigma = torch.tensor([0.5, 2.0])
    garbage = y.clone()
    garbage[..., 20:] = 50.0
    clean = probe.loss(y, sigma=sigma, noise=noise, mask=mask)
    assert torch.allclose(clean, probe.loss(garbage, sigma=sigma, noise=noise, mask=mask))
    assert not torch.allclose(clean, probe.loss(garbage, sigma=sigma, noise=noise))
    assert clean.shape == (2,)


@pytest.mark.parametrize("preset,n_mels,frames,fold,cond", [
    ("tiny", 16, 24, 1, 0), ("tiny", 32, 40, 2, 1), ("cpu-demo", 128, 36, 1, 0), ("cpu-demo", 128, 16, 1, 1),
    ("difftransfer", 128, 16, 8, 0),
])
def test_unet_shapes(preset, n_mels, frames, fold, cond):
    m = build_model(ModelConfig(unet=unet_preset(preset, n_mels=n_mels, freq_fold=fold, cond_channels=cond)
                                if preset != "cpu-demo" else unet_preset(preset, n_mels=n_mels, cond_channels=cond)))
    x = torch.randn(2, n_mels, frames)
    c = torch.randn(2, n_mels, frames) if cond else None
    with torch.no_grad():
        assert m(x, torch.tensor([0.3, 5.0]), c).shape == x.shape


def test_unet_errors_name_the_problem():
    m = build_model(ModelConfig(unet=unet_preset("tiny", n_mels=16)))
    with torch.no_grad():  # any frame count: padded to the downsampling factor (4) and cropped
        assert m(torch.randn(1, 16, 33), 1.0).shape == (1, 16, 33)
    with pytest.raises(ValueError, match="16 mel bins"):
        m(torch.randn(1, 8, 32), 1.0)
    with pytest.raises(ValueError, match="unconditional"):
        m(torch.randn(1, 16, 32), 1.0, torch.randn(1, 16, 32))
    with pytest.raises(ValueError, match="unknown U-Net preset"):
        unet_preset("huge")
    with pytest.raises(ValueError, match="attention_levels"):
        UNetConfig(widths=(8, 16), attention_levels=(2,), attention_heads=2, group_norm_groups=4)
    with pytest.raises(ValueError, match="Extra inputs"):
        UNetConfig(widthz=(8,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_round_trip_is_self_describing():
    torch.manual_seed(0)
    m = build_model(ModelConfig(unet=unet_preset("tiny", n_mels=16, cond_channels=1), edm=EDMConfig(sigma_data=0.8)))
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.02)
    data = checkpoint_bytes(m, {"trained_on": "unit-test"})
    loaded, meta = load_checkpoint_bytes(data)
    assert meta == {"trained_on": "unit-test"} and loaded.cfg.sigma_data == 0.8
    x, c = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    with torch.no_grad():
        assert torch.equal(m.eval()(x, 0.7, c), loaded(x, 0.7, c))
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        # a pickle that would run code is refused by weights_only=True
        import io, pickle, os  # noqa: E401
        buf = io.BytesIO()
        pickle.dump(os.system, buf)
        load_checkpoint_bytes(buf.getvalue())


def overfit(preset: str, n_mels: int, frames: int, lr: float, steps: int, cond: bool = False) -> tuple[float, float]:
    """Fixed (y, sigma, noise): the loss of one batch must collapse."""
    torch.manual_seed(0)
    m = build_model(ModelConfig(unet=unet_preset(preset, n_mels=n_mels, cond_channels=int(cond))))
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    y = torch.randn(2, n_mels, frames, generator=g)
    c = -y + 0.1 * torch.randn(y.shape, generator=g) if cond else None
    sigma, noise = m.sample_sigma(2, g), torch.randn(y.shape, generator=g)
    losses = [train_step(m, opt, y, sigma=sigma, noise=noise, cond=c) for _ in range(steps)]
    return losses[0], min(losses[-5:])


def test_tiny_preset_overfits_one_batch():
    first, last = overfit("tiny", 16, 32, 2e-3, 60)
    assert last < first / 10, (first, last)


def test_conditional_baseline_overfits_paired_batch():
    first, last = overfit("tiny", 16, 32, 2e-3, 60, cond=True)
    assert last < first / 10, (first, last)


@pytest.mark.slow
@pytest.mark.parametrize("preset,n_mels,frames,lr,steps", [("cpu-demo", 128, 64, 2e-3, 60),
                                                          ("difftransfer", 32, 32, 5e-4, 45)])
def test_larger_presets_overfit_one_batch(preset, n_mels, frames, lr, steps):
    first, last = overfit(preset, n_mels, frames, lr, steps)
    assert last < first / 10, (first, last)


def test_conditioned_refuses_an_unconditional_model():
    from tasks.diffusion.conditional import conditioned

    with pytest.raises(ValueError, match="unconditional"):
        conditioned(build_model(ModelConfig(unet=unet_preset("tiny", n_mels=16))), torch.zeros(1, 16, 32))


def test_local_head_starts_as_the_identity_and_is_checked():
    """The 2D head's last layer is zero: at init the net equals its 1D body, so adding the head
    cannot change what an untrained model does, only what it can learn."""
    torch.manual_seed(0)
    cfg = unet_preset("cpu-demo", n_mels=32, widths=(32, 48), attention_levels=(1,))
    assert cfg.local_head_channels == 16
    with_head = UNet(cfg)
    body = UNet(cfg.model_copy(update={"local_head_channels": 0}))
    missing, unexpected = body.load_state_dict(with_head.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith("head.") for k in unexpected)
    x = torch.randn(2, 32, 22)
    with torch.no_grad():
        assert torch.equal(with_head(x, torch.tensor([0.1, 2.0])), body(x, torch.tensor([0.1, 2.0])))
    with pytest.raises(ValueError, match="local_head_channels=16 needs dims=1"):
        unet_preset("tiny", n_mels=16, local_head_channels=16)
    with pytest.raises(ValueError, match="multiple of 4"):
        unet_preset("cpu-demo", n_mels=16, local_head_channels=6)


@pytest.mark.parametrize("dims,shape", [(2, (2, 32, 32, 32)), (1, (3, 64, 48))])
def test_attention_runs_on_the_fused_kernel_and_equals_the_math_path(dims, shape):
    """SDPA's fused CPU (and CUDA) kernels need unit stride on the last dim; given strided views
    it silently falls back to the math path, which builds the whole positions x positions matrix
    (10x slower at 1,024 positions: the tiny and gpu presets' 2D attention). Restricted to the
    flash backend, the layer must still run, and agree with the math path."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from tasks.diffusion.unet import Attention

    torch.manual_seed(0)
    layer = Attention(dims, shape[1], heads=2, groups=4)
    torch.nn.init.normal_(layer.proj.weight)  # the zero-initialised projection would hide the attention
    x = torch.randn(*shape)
    with torch.no_grad():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            fused = layer(x)
        with sdpa_kernel(SDPBackend.MATH):
            reference = layer(x)
    assert fused.shape == x.shape
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)


def test_a_changed_preset_is_a_different_training_run(monkeypatch):
    """The run folder is keyed by the config hash; a preset whose fields change must not find
    (and resume) a checkpoint of the old architecture."""
    from schemas import training
    from schemas.diffusion import UNET_PRESETS

    cfg = training.TrainConfig(domain="flute", features_url="/x", preset="cpu-demo")
    before = cfg.config_hash()
    monkeypatch.setitem(UNET_PRESETS, "cpu-demo", {**UNET_PRESETS["cpu-demo"], "local_head_channels": 0})
    assert cfg.config_hash() != before
    assert cfg.model_copy(update={"unet": {"local_head_channels": 16}}).config_hash() != cfg.config_hash()
