"""`make bench`, diffusion core: sampler error vs model evaluations on a Gaussian mixture whose
exact PF-ODE solution is known, and the forward throughput of each U-Net preset (CPU; on a GPU
also bf16 throughput and model FLOP utilisation of the difftransfer preset)."""
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.benchmarks.gpu_peak import peak_bf16_tflops

from schemas.configs import MelConfig
from schemas.diffusion import UNET_PRESETS, unet_preset
from tasks.diffusion.analytic import GaussianMixture
from schemas.diffusion import ModelConfig
from tasks.builders import build_model
from tasks.diffusion.samplers import SAMPLERS, karras_sigmas, model_evaluations

MIX = GaussianMixture(weights=(0.3, 0.7), means=((-2.0,), (3.0,)), stds=(0.5, 0.8))
PATCH_FRAMES = 128


def test_sampler_error_vs_model_evaluations():
    x_T = 80.0 * torch.randn(4000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = MIX.ode_map(x_T, 80.0, 0.0)
    print("\n[samplers] mean |x - exact PF-ODE solution| on a 2-component 1-D mixture (stds 0.5, 0.8), 4000 draws")
    print(f"{'sampler':>10} {'steps':>6} {'evals':>6} {'error':>10} {'weight err':>10}")
    for name in SAMPLERS:
        for steps in (5, 10, 18, 35, 70):
            grid = karras_sigmas(steps, 0.002, 80.0)
            out = SAMPLERS[name](MIX, x_T, grid)
            w = abs(float((out > 0.5).double().mean()) - float((exact > 0.5).double().mean()))
            print(f"{name:>10} {steps:>6} {model_evaluations(name, grid):>6} "
                  f"{float((out - exact).abs().mean()):>10.5f} {w:>10.4f}")


def _throughput(model, x, sigma, reps: int) -> float:
    """Forward passes per second (after a warm-up pass)."""
    with torch.no_grad():
        model(x, sigma)
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            model(x, sigma)
        if x.is_cuda:
            torch.cuda.synchronize()
    return reps / (time.perf_counter() - t0)


def test_preset_forward_throughput_cpu():
    mel = MelConfig()
    patch_s = PATCH_FRAMES * mel.hop_length_samples / mel.sample_rate_hz
    torch.manual_seed(0)
    print(f"\n[presets] CPU forward, {torch.get_num_threads()} threads, patch = {mel.n_mels} bins x "
          f"{PATCH_FRAMES} frames = {patch_s:.2f} audio-s, batch 8, fp32")
    for name in UNET_PRESETS:
        m = build_model(ModelConfig(unet=unet_preset(name, n_mels=mel.n_mels))).eval()
        params = sum(p.numel() for p in m.parameters())
        x = torch.randn(8, mel.n_mels, PATCH_FRAMES)
        calls = _throughput(m, x, torch.full((8,), 1.0), reps=1 if name == "difftransfer" else 3)
        print(f"[presets] {name:>13}: {params / 1e6:6.2f} M params, {8 * calls:8.1f} patches/s, "
              f"{8 * calls * patch_s:8.1f} audio-s/s (one denoiser evaluation)")


def test_difftransfer_bf16_mfu_gpu():
    if not torch.cuda.is_available():
        print("\n[gpu] no CUDA device here: bf16 throughput and MFU are measured on a lent GPU machine")
        return
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(dev)
    peak = peak_bf16_tflops(name)
    mel, batch = MelConfig(), 64
    m = build_model(ModelConfig(unet=unet_preset("difftransfer", n_mels=mel.n_mels))).to(dev).eval()
    x, sigma = torch.randn(batch, mel.n_mels, PATCH_FRAMES, device=dev), torch.full((batch,), 1.0, device=dev)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m(x, sigma)
    flops = fc.get_total_flops()
    patch_s = PATCH_FRAMES * mel.hop_length_samples / mel.sample_rate_hz
    for label, ctx in (("fp32 (tf32 off)", torch.autocast("cuda", enabled=False)),
                       ("bf16 autocast", torch.autocast("cuda", dtype=torch.bfloat16))):
        with ctx:
            calls = _throughput(m, x, sigma, reps=20)
        achieved = flops * calls / 1e12
        mfu = f", MFU {achieved / peak:.1%} of {peak:.0f} TFLOP/s" if peak else ""
        print(f"\n[gpu] {name} difftransfer {label}: {batch * calls:.0f} patches/s, "
              f"{batch * calls * patch_s:.0f} audio-s/s, {achieved:.1f} TFLOP/s achieved{mfu}")
