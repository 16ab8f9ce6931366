"""`make bench-gpu`: one table of what a lent GPU does with this pipeline, in under 5 minutes, with
no network. bf16 training samples/s and model FLOP utilisation of the `gpu` presets (denoiser,
vocoder with its discriminators, autoencoder) through the solver's own step; the transform's real-
time factor with the shipped latent flute model, autoencoder and vocoder on the GPU; one short DDP
run of the denoiser on every visible GPU. `--smoke` runs the same code on the CPU with the tiny
presets (tests/unit runs it, so this script cannot rot between GPU loans).

A section that cannot run prints why (e.g. a package missing there) and the others go on. On a lent
machine whose Python lacks this project's pure-Python packages, `make gpu-wheels` (here) fetches
them into .whl/, and `make bench-gpu` (there) installs them into /tmp/site first."""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.gpu_peak import peak_bf16_tflops  # noqa: E402

ROWS: list[tuple[str, str, str]] = []  # (what, figure, detail)


def timed_steps(step, device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per call of `step` after `warmup` calls (synchronised on a GPU)."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def training_row(what: str, step, batch: int, device: torch.device, steps: int, detail: str) -> None:
    """samples/s of `step` (one optimiser update of a batch), its FLOPs counted once, and MFU."""
    with FlopCounterMode(display=False) as fc:
        step()
    flops = fc.get_total_flops()
    seconds = timed_steps(step, device, warmup=2, steps=steps)
    achieved = flops / seconds / 1e12
    peak = peak_bf16_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else 0.0
    mfu = f", MFU {achieved / peak:.1%}" if peak else ""
    ROWS.append((what, f"{batch / seconds:,.1f} samples/s", f"{achieved:.3g} TFLOP/s{mfu}; {detail}"))


def _denoiser(device: torch.device, smoke: bool):
    """The preset's denoiser on `device`, its EDM loss, AdamW and one batch of the preset's shape."""
    from schemas.diffusion import ModelConfig, unet_preset
    from schemas.training import TRAIN_PRESETS
    from tasks.builders import build_model
    from tasks.diffusion.precond import EDMLoss
    from tasks.solver import adamw

    p = TRAIN_PRESETS["tiny" if smoke else "gpu"]
    model = build_model(ModelConfig(unet=unet_preset(p["preset"], n_mels=128))).to(device)
    b, frames = p["batch_size"], p["crop_frames"]
    batch = {"y": torch.randn(b, 128, frames, device=device), "sigma": model.sample_sigma(b, device=device),
             "noise": torch.randn(b, 128, frames, device=device)}
    return p["preset"], EDMLoss(model), adamw(model.parameters(), lr=1e-4, weight_decay=0.0), batch


def denoiser(device: torch.device, amp, smoke: bool, steps: int) -> None:
    from tasks.solver import optimise

    preset, loss, opt, batch = _denoiser(device, smoke)
    b, frames = batch["y"].shape[0], batch["y"].shape[-1]
    training_row(f"denoiser, {preset} preset, train", lambda: optimise(loss, opt, batch, autocast_dtype=amp),
                 b, device, steps, f"batch {b} x 128 mels x {frames} frames")


def vocoder(device: torch.device, amp, smoke: bool, steps: int) -> None:
    from schemas.vocoder import VOCODER_PRESETS, VocoderTrainConfig
    from tasks.builders import build_model
    from tasks.features import LogMel
    from tasks.solver import adamw, optimise
    from tasks.vocoder.discriminators import DiscriminatorLoss
    from tasks.vocoder.kind import VocoderLoss

    cfg = VocoderTrainConfig(clips_urls=("unused",), **VOCODER_PRESETS["tiny" if smoke else "gpu"])
    gen, disc = build_model(cfg.vocos()).to(device), build_model(cfg.discriminator).to(device)
    g_loss = VocoderLoss(gen, cfg.mel_loss_weight, cfg.phase_loss_weight, disc, cfg.adversarial_weight,
                         cfg.feature_matching_weight).to(device)
    d_loss = DiscriminatorLoss(disc)
    g_opt = adamw(gen.parameters(), lr=1e-4, betas=(0.8, 0.99), weight_decay=0.0)
    d_opt = adamw(disc.parameters(), lr=1e-4, betas=(0.8, 0.99), weight_decay=0.0)
    b, samples = cfg.batch_size, cfg.segment_frames * cfg.mel.hop_length_samples
    t = torch.arange(samples, device=device) / cfg.mel.sample_rate_hz  # harmonic tones: a vocoder's material
    f0 = 110 * 2 ** (torch.rand(b, 1, device=device) * 3)
    audio = 0.3 * sum(torch.sin(2 * torch.pi * k * f0 * t) / k for k in range(1, 6)).float()
    batch = {"logmel": LogMel(cfg.mel).to(device)(audio).clone(), "audio": audio}  # out of inference mode

    def step():  # the solver's alternation (HiFi-GAN): generator, then discriminator on its output
        optimise(g_loss, g_opt, batch, autocast_dtype=amp)
        optimise(d_loss, d_opt, g_loss.last, autocast_dtype=amp)

    training_row(f"vocoder, {cfg.preset} preset + discriminators, train", step, b, device, steps,
                 f"batch {b} x {samples / cfg.mel.sample_rate_hz:.1f} s")


def autoencoder(device: torch.device, amp, smoke: bool, steps: int) -> None:
    from schemas.autoencoder import AUTOENCODER_PRESETS, AutoencoderTrainConfig
    from tasks.autoencoder.kind import AutoencoderLoss
    from tasks.builders import build_model
    from tasks.solver import adamw, optimise

    cfg = AutoencoderTrainConfig(clips_urls=("unused",), **AUTOENCODER_PRESETS["tiny" if smoke else "gpu"])
    arch = cfg.autoencoder()
    model = build_model(arch).to(device)
    loss, opt = AutoencoderLoss(model, cfg.kl_weight), adamw(model.parameters(), lr=1e-4, weight_decay=0.0)
    b, frames = cfg.batch_size, cfg.segment_frames
    batch = {"logmel": torch.randn(b, 128, frames, device=device) * 2 - 6,
             "noise": torch.randn(b, arch.latent_channels, frames // arch.time_downsample, device=device)}
    training_row(f"autoencoder, {cfg.preset} preset, train", lambda: optimise(loss, opt, batch, autocast_dtype=amp),
                 b, device, steps, f"batch {b} x 128 mels x {frames} frames")


def transform(device: torch.device, amp, smoke: bool, steps: int) -> None:
    """Shipped latent flute model at tau_init 0.6 with the default sampler, from the log-mel of
    each guide to the vocoded audio; the guides are harmonic tones (the cost does not depend on
    what they sound like)."""
    import numpy as np

    from schemas.transform import TransformConfig
    from tasks.builders import load_autoencoder, load_model, load_vocoder
    from tasks.transform import Transformer

    w = ROOT / "weights"
    target = load_model((w / "flute-latent/model.pt").read_bytes(), "shipped:flute-latent")
    ae = load_autoencoder((w / "autoencoder/model.pt").read_bytes(), "shipped:autoencoder", target.card.mel)
    voc = load_vocoder((w / "vocoder/model.pt").read_bytes(), "shipped:vocoder", target.card.mel, device)
    cfg = TransformConfig.model_validate({"model": "shipped:flute-latent", "warm": {"t_init": 0.6, "lam": 0.0},
                                           "vocoder": "shipped:vocoder"})
    n, seconds, batch = (2, 3.0, 8) if smoke else (64, 10.0, 64)
    tr = Transformer(cfg, target, batch_windows=batch, device=str(device), bf16=amp is not None, vocoder=voc,
                     autoencoder=ae)
    sr = target.card.mel.sample_rate_hz
    t = np.arange(int(seconds * sr)) / sr
    clips = [(0.3 * np.sin(2 * np.pi * 220 * 2 ** (k / 12) * t)).astype(np.float32) for k in range(n)]
    ids = [f"bench-{k}" for k in range(n)]
    wall = timed_steps(lambda: tr.transform(ids, clips, [sr] * n), device, warmup=1, steps=max(1, steps // 10))
    ROWS.append(("transform, shipped latent flute, tau_init 0.6", f"{n * seconds / wall:,.0f}x real time",
                 f"{n} clips x {seconds:.0f} s, {batch} windows a call, {'bf16' if amp else 'fp32'}, "
                 f"sampler {cfg.sampler.name} K {cfg.sampler.solver_steps}, vocoder on the same device"))


def _ddp_rank(rank: int, world: int, smoke: bool, steps: int, out) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from tasks.solver import optimise

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("BENCH_DDP_PORT", "29571"))
    gpu = torch.cuda.is_available() and not smoke
    if gpu:
        torch.cuda.set_device(rank)  # NCCL's communicator binds to the current device
    dist.init_process_group("nccl" if gpu else "gloo", rank=rank, world_size=world)
    device = torch.device("cuda", rank) if gpu else torch.device("cpu")
    _, loss, opt, batch = _denoiser(device, smoke)  # per GPU: the global batch grows with the world (weak scaling)
    loss = DistributedDataParallel(loss, device_ids=[rank] if gpu else None)
    b = batch["y"].shape[0]
    amp = torch.bfloat16 if gpu else None
    seconds = timed_steps(lambda: optimise(loss, opt, batch, autocast_dtype=amp), device, warmup=2, steps=steps)
    if rank == 0:
        out.put(world * b / seconds)
    dist.destroy_process_group()


def ddp(device: torch.device, amp, smoke: bool, steps: int) -> None:
    import torch.multiprocessing as mp

    world = torch.cuda.device_count() if device.type == "cuda" else 1
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_ddp_rank, args=(r, world, smoke, steps, out)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs):
        raise RuntimeError(f"a DDP rank exited with {[p.exitcode for p in procs]}")
    ROWS.append((f"denoiser DDP on {world} {'GPU' if device.type == 'cuda' else 'CPU process'}(es)",
                 f"{out.get():,.1f} samples/s", "all ranks together, per-rank batch of the preset, NCCL" if
                 device.type == "cuda" else "gloo"))


SECTIONS = {"denoiser": denoiser, "vocoder": vocoder, "autoencoder": autoencoder, "transform": transform, "ddp": ddp}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny presets, a few steps: checks the script runs")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per training row (default 20; smoke 2)")
    ap.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="run only these sections")
    args = ap.parse_args(argv)
    gpu = torch.cuda.is_available() and not args.smoke
    if not gpu and not args.smoke:
        print("bench-gpu: no CUDA device here; run it on a lent GPU machine (or --smoke to check the script)")
        return 2
    device = torch.device("cuda" if gpu else "cpu")
    amp = torch.bfloat16 if gpu else None
    steps = args.steps or (20 if gpu else 2)
    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({os.cpu_count()} cores), smoke run"
    print(f"bench-gpu on {name}; torch {torch.__version__}; {'bf16 autocast' if amp else 'fp32'}", flush=True)
    failed = []
    for key in args.only or SECTIONS:
        t0 = time.perf_counter()
        try:
            SECTIONS[key](device, amp, args.smoke, steps)
        except Exception as e:  # one section's failure must not hide the others' figures
            failed.append(key)
            ROWS.append((key, "not measured", f"{type(e).__name__}: {e}".splitlines()[0][:160]))
            traceback.print_exc()
        print(f"  {key}: {time.perf_counter() - t0:.0f} s", flush=True)
    width = max(len(r[0]) for r in ROWS)
    print(f"\n| {'what'.ljust(width)} | figure | detail |\n|{'-' * (width + 2)}|---|---|")
    for what, figure, detail in ROWS:
        print(f"| {what.ljust(width)} | {figure} | {detail} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
