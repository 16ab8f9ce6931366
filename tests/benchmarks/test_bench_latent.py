"""`make bench`, latent vs log-mel diffusion (issue 19's cost points), side by side in one run with
the CPU's flags: training samples/s (and audio-seconds/s) of the mel `cpu-demo` denoiser against
the `cpu-latent` one, both through the solver's own step (tasks/solver.optimise, EDM loss, AdamW,
the precision `auto` picks), and the cost of one Heun step on a 2.56 s window (8 windows a call,
as the transformer batches them), the latent one including its share of encoding and decoding."""
from __future__ import annotations

import time

import torch

from jobs.ship import cpu_flags
from schemas.autoencoder import AUTOENCODER_ARCHITECTURES, AutoencoderConfig
from schemas.diffusion import ModelConfig
from schemas.training import TRAIN_PRESETS, TrainConfig
from tasks.autoencoder.model import MelAutoencoder
from tasks.builders import build_model
from tasks.diffusion.precond import EDMLoss
from tasks.diffusion.train import autocast_dtype_for
from tasks.solver import adamw, optimise

FRAME_S = 0.02  # one mel frame (hop 320 at 16 kHz)
AE = AutoencoderConfig(**AUTOENCODER_ARCHITECTURES["cpu"])


def _model(preset: str, bins: int, crop: int | None = None) -> torch.nn.Module:
    cfg = TrainConfig(domain="x", features_url="x", **TRAIN_PRESETS[preset] | ({"crop_frames": crop} if crop else {}))
    torch.manual_seed(0)
    return build_model(ModelConfig(unet=cfg.unet_config(bins))), cfg.crop_frames


def _train_rate(preset: str, bins: int, steps: int = 30, crop: int | None = None,
                fused: bool = True) -> tuple[float, float]:
    """(samples/s, audio-seconds/s) of the solver's step at the preset's batch and crop (or `crop`);
    fused=False: torch's per-parameter AdamW loop, the solver's optimizer before it was fused."""
    model, crop = _model(preset, bins, crop)
    batch = TRAIN_PRESETS[preset]["batch_size"]
    opt = (adamw(model.parameters(), lr=1e-4, weight_decay=0.0) if fused
           else torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, foreach=False))
    loss = EDMLoss(model)
    amp = autocast_dtype_for("auto", "cpu")
    data = {"y": torch.randn(batch, bins, crop), "sigma": torch.rand(batch) + 0.1,
            "noise": torch.randn(batch, bins, crop), "mask": torch.ones(batch, bins, crop)}
    for _ in range(3):
        optimise(loss, opt, data, autocast_dtype=amp)
    t0 = time.perf_counter()
    for _ in range(steps):
        optimise(loss, opt, data, autocast_dtype=amp)
    rate = steps * batch / (time.perf_counter() - t0)
    frames = crop * (AE.time_downsample if bins == AE.latent_channels else 1)
    return rate, rate * frames * FRAME_S


def test_latent_training_throughput_against_the_mel_demo_model():
    print(f"\n[latent] CPU flags: {' '.join(cpu_flags()) or 'none'}; {torch.get_num_threads()} threads; "
          f"autocast {autocast_dtype_for('auto', 'cpu')}")
    mel = _train_rate("cpu-demo", 128)
    latent = _train_rate("cpu-latent", AE.latent_channels)
    # the same audio per sample as the mel preset's crop (64 mel frames = 16 latent frames, 1.28 s)
    same = _train_rate("cpu-latent", AE.latent_channels, crop=64 // AE.time_downsample)
    print(f"[latent] training, batch 16: mel cpu-demo {mel[0]:.1f} samples/s ({mel[1]:.1f} audio-s/s, crop 64 frames) | "
          f"latent cpu-latent {latent[0]:.1f} samples/s ({latent[1]:.1f} audio-s/s, crop 32 latent frames = 128 mel "
          f"frames) | ratio {latent[0] / mel[0]:.2f}x samples/s, {latent[1] / mel[1]:.2f}x audio-s/s")
    print(f"[latent] at the mel crop's audio length (16 latent frames = 64 mel frames, 1.28 s): latent {same[0]:.1f} "
          f"samples/s, ratio {same[0] / mel[0]:.2f}x samples/s of equal audio")
    mel_loop = _train_rate("cpu-demo", 128, fused=False)
    latent_loop = _train_rate("cpu-latent", AE.latent_channels, fused=False)
    same_loop = _train_rate("cpu-latent", AE.latent_channels, crop=64 // AE.time_downsample, fused=False)
    print(f"[latent] the same three with per-parameter AdamW (before the fused optimizer): mel {mel_loop[0]:.1f}, "
          f"latent {latent_loop[0]:.1f}, latent at 1.28 s {same_loop[0]:.1f} samples/s; fused gains mel "
          f"{mel[0] / mel_loop[0]:.2f}x, latent {latent[0] / latent_loop[0]:.2f}x, latent at 1.28 s "
          f"{same[0] / same_loop[0]:.2f}x; ratios with the loop {latent_loop[0] / mel_loop[0]:.2f}x / "
          f"{same_loop[0] / mel_loop[0]:.2f}x samples/s")


@torch.no_grad()
def test_one_sampler_step_on_a_window_latent_against_mel():
    window, n = 128, 8  # mel frames (2.56 s), windows per call
    mel_model, _ = _model("cpu-demo", 128)
    lat_model, _ = _model("cpu-latent", AE.latent_channels)
    ae = MelAutoencoder(AE).eval()
    x_mel = torch.randn(n, 128, window)
    x_lat = torch.randn(n, AE.latent_channels, window // AE.time_downsample)
    sigma = torch.full((n,), 1.0)

    def timed(fn, reps: int = 10) -> float:
        fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps

    mel_s = timed(lambda: mel_model(x_mel, sigma))
    lat_s = timed(lambda: lat_model(x_lat, sigma))
    codec_s = timed(lambda: ae.decode(ae.encode(x_mel)[0]), reps=3)
    steps = 35 * 2 * 0.35  # Heun, 35 steps, tau_init 0.65: ~24 model evaluations per window
    print(f"\n[latent] one denoiser call on {n} windows of {window * FRAME_S:.2f} s: mel {mel_s * 1e3:.1f} ms, "
          f"latent {lat_s * 1e3:.1f} ms ({mel_s / lat_s:.2f}x); encode+decode once {codec_s * 1e3:.1f} ms; "
          f"per window at ~{steps:.0f} evaluations: mel {mel_s * steps * 1e3:.0f} ms, latent "
          f"{(lat_s * steps + codec_s) * 1e3:.0f} ms ({mel_s * steps / (lat_s * steps + codec_s):.2f}x)")
