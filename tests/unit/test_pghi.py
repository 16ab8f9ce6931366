"""Phase from magnitude (tasks/vocoder/pghi.py) and the vocoder decoding with it: PGHI rebuilds a
real signal's phase well enough that the STFT of its inverse matches the magnitude it started
from; it is deterministic and refuses what it cannot read; a vocoder decodes with it only where
its config says so, and a shipped file's decode-time fields can be changed without its weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from schemas.vocoder import VOCODER_PRESETS, VocoderTrainConfig, VocosConfig
from tasks.builders import build_model
from tasks.vocoder.pghi import pghi_phase
from tests.conftest import ship_card

SR, HOP, N_FFT = 16000, 320, 1280


def _stft(y: torch.Tensor, n_fft: int = N_FFT) -> torch.Tensor:
    return torch.stft(y, n_fft, HOP, n_fft, torch.hann_window(n_fft), center=True, pad_mode="constant",
                      return_complex=True)


def _music(seconds: float = 3.0) -> torch.Tensor:
    """Two harmonic notes, the first with a 5.5 Hz vibrato, the second entering at 1.2 s, over a
    faint noise floor: partials that move, an onset, and bins with no partial in them."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 392.0 * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
    x = sum(0.3 / k * np.sin(2 * np.pi * k * np.cumsum(f0) / SR) for k in range(1, 6))
    x = x + (t >= 1.2) * sum(0.2 / k * np.sin(2 * np.pi * k * 587.3 * t) for k in range(1, 4))
    x = x + 1e-3 * np.random.default_rng(0).standard_normal(len(t))
    return torch.from_numpy(x.astype(np.float32))


def _spectral_convergence(x: torch.Tensor, phase: np.ndarray) -> float:
    mag = _stft(x).abs()
    y = torch.istft(torch.polar(mag, torch.from_numpy(phase).float()), N_FFT, HOP, N_FFT, torch.hann_window(N_FFT),
                    center=True, length=len(x))
    return float((_stft(y).abs() - mag).norm() / mag.norm())


def test_pghi_rebuilds_a_real_signals_phase():
    """Measured 0.03 here (flute clips of the corpus: 0.025; violin 0.08). The gradient relations'
    signs or the phase convention wrong give 0.3-0.7 on the clips; a random phase 0.65 here."""
    x = _music()
    mag = _stft(x).abs().numpy()
    sc = _spectral_convergence(x, pghi_phase(mag, HOP, N_FFT))
    random = _spectral_convergence(x, np.random.default_rng(1).uniform(-np.pi, np.pi, mag.shape))
    assert sc < 0.06 and random > 0.5, (sc, random)


def test_pghi_is_deterministic_and_refuses_what_it_cannot_read():
    mag = _stft(_music(1.0)).abs().numpy()
    a, b = pghi_phase(mag, HOP, N_FFT), pghi_phase(mag.copy(), HOP, N_FFT)
    assert np.array_equal(a, b) and a.shape == mag.shape and np.isfinite(a).all()
    silent = pghi_phase(np.zeros_like(mag), HOP, N_FFT)  # nothing to integrate: every bin gets the fixed noise phase
    assert np.isfinite(silent).all()
    one_frame = pghi_phase(mag[:, :1], HOP, N_FFT)
    assert one_frame.shape == (mag.shape[0], 1)
    with pytest.raises(ValueError, match=r"shape \[641, frames\]"):
        pghi_phase(mag[:100], HOP, N_FFT)
    with pytest.raises(ValueError, match="tolerance"):
        pghi_phase(mag, HOP, N_FFT, tolerance=0.0)


def _tiny(**over) -> VocosConfig:
    return VocoderTrainConfig(clips_urls=("x",), **VOCODER_PRESETS["tiny"]).vocos().model_copy(update=over)


def test_a_vocoder_decodes_with_pghi_only_where_its_config_says_so():
    """Checkpoints saved before the field decode with the head's phase, as they did; the presets
    decode with PGHI. The magnitude is the head's either way: only the phase differs."""
    assert VocosConfig().phase == "head"
    assert all(VocoderTrainConfig(clips_urls=("x",), **VOCODER_PRESETS[p]).vocos().phase == "pghi"
               for p in ("tiny", "cpu", "gpu"))
    torch.manual_seed(0)
    head = build_model(_tiny(phase="head", consistency_iters=0)).eval()
    pghi = build_model(_tiny(phase="pghi", consistency_iters=0)).eval()
    pghi.load_state_dict(head.state_dict())
    logmel = torch.randn(2, 128, 23)
    with torch.no_grad():
        a, b = head(logmel), pghi(logmel)
        mag, predicted = head.spectrum(logmel)
    assert a.shape == b.shape == (2, 22 * HOP) and bool(torch.isfinite(b).all())
    assert torch.allclose(a, head.istft(torch.polar(mag, predicted), a.shape[-1]), atol=1e-6)
    assert torch.allclose(b, head.istft(torch.polar(mag, pghi.integrated_phase(mag)), b.shape[-1]), atol=1e-6)
    assert not torch.allclose(a, b, atol=1e-3)


def test_a_checkpoints_decode_fields_change_without_its_weights(tmp_path, monkeypatch):
    """`shipped ship --set phase="pghi"` (jobs/ship.py): same weights and card, the new field;
    an unknown or invalid field is refused, and so is one that changes a weight's shape."""
    from infra.settings import get_settings
    from jobs.ship import ship_job
    from tasks.builders import load_checkpoint_bytes
    from tasks.diffusion.checkpoint import checkpoint_bytes, with_architecture

    model = build_model(_tiny(phase="head"))
    data = checkpoint_bytes(model, {"kind": "vocoder"})
    changed, meta = load_checkpoint_bytes(with_architecture(data, {"phase": "pghi"}))
    assert changed.cfg.phase == "pghi" and meta == {"kind": "vocoder"}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in changed.state_dict().items())
    with pytest.raises(ValueError, match="phase"):
        with_architecture(data, {"phase": "hilbert"})
    with pytest.raises(ValueError, match="dims"):
        with_architecture(data, {"dims": 8})

    monkeypatch.setenv("REINSTRUMENT_SHIPPED_DIR", str(tmp_path / "weights"))
    get_settings.cache_clear()
    try:
        (tmp_path / "weights" / "src").mkdir(parents=True)
        (tmp_path / "weights" / "src" / "model.pt").write_bytes(data)
        ship_card(tmp_path / "weights" / "src")  # a shipped file is loaded only with its card's checksum
        with pytest.raises(ValueError, match="only decode-time fields"):
            ship_job("shipped:src", str(tmp_path / "weights" / "out"), {}, architecture={"dim": 24})
        path = ship_job("shipped:src", str(tmp_path / "weights" / "out"), {"seed": 0}, architecture={"phase": "pghi"})
        assert load_checkpoint_bytes(path.read_bytes())[0].cfg.phase == "pghi"
        assert '"architecture_overrides": {\n    "phase": "pghi"' in (path.parent / "card.json").read_text()
    finally:
        get_settings.cache_clear()
