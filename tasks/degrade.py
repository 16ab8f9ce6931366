"""Degradations that make enhancement guides from clean audio. Deterministic given a seed."""
from __future__ import annotations

import numpy as np
from scipy import signal

from schemas.configs import DegradeConfig

KINDS = ("noise", "lowpass", "clipping", "reverb")


def enabled_kinds(cfg: DegradeConfig) -> list[str]:
    flags = {"noise": cfg.snr_db, "lowpass": cfg.lowpass_hz, "clipping": cfg.clip_gain_db,
             "reverb": cfg.reverb_rt60_s}
    return [k for k in KINDS if flags[k] is not None]


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    p_signal = float(np.mean(x.astype(np.float64) ** 2))
    noise = rng.standard_normal(x.size) * np.sqrt(p_signal / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


def lowpass(x: np.ndarray, cutoff_hz: float, sample_rate_hz: int) -> np.ndarray:
    cutoff_hz = min(cutoff_hz, 0.45 * sample_rate_hz)
    sos = signal.butter(8, cutoff_hz, btype="low", fs=sample_rate_hz, output="sos")
    return signal.sosfiltfilt(sos, x).astype(np.float32)


def hard_clip(x: np.ndarray, gain_db: float) -> np.ndarray:
    peak = float(np.max(np.abs(x))) or 1.0
    return np.clip(x / peak * 10 ** (gain_db / 20), -1, 1).astype(np.float32) * peak


def reverb(x: np.ndarray, rt60_s: float, sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """Exponentially decaying noise impulse response (60 dB down at rt60_s), 30% wet."""
    n = int(rt60_s * sample_rate_hz)
    t = np.arange(n) / sample_rate_hz
    ir = rng.standard_normal(n) * 10 ** (-3 * t / rt60_s)
    ir /= np.sqrt(np.sum(ir ** 2))
    wet = signal.fftconvolve(x, ir)[: x.size]
    return (0.7 * x + 0.3 * wet).astype(np.float32)


def degrade(x: np.ndarray, kind: str, cfg: DegradeConfig, sample_rate_hz: int,
            seed: int) -> tuple[np.ndarray, dict]:
    """One degradation; returns the audio and a description stored with the guide clip."""
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return add_noise(x, cfg.snr_db, rng), {"kind": kind, "snr_db": cfg.snr_db}
    if kind == "lowpass":
        return lowpass(x, cfg.lowpass_hz, sample_rate_hz), {"kind": kind, "cutoff_hz": cfg.lowpass_hz}
    if kind == "clipping":
        return hard_clip(x, cfg.clip_gain_db), {"kind": kind, "gain_db": cfg.clip_gain_db}
    if kind == "reverb":
        return reverb(x, cfg.reverb_rt60_s, sample_rate_hz, rng), {"kind": kind, "rt60_s": cfg.reverb_rt60_s}
    raise ValueError(f"unknown degradation {kind!r}; expected one of {KINDS}")
