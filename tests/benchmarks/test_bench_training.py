"""`make bench`, training: samples/s of the tiny preset on 1 vs 2 Ray Train CPU workers (steady
state: the last logging window, start-up excluded), and on a GPU the gpu preset's bf16 samples/s
and model FLOP utilisation."""
import json
import os
import time

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.benchmarks.gpu_peak import peak_bf16_tflops

from schemas.training import TRAIN_PRESETS, TrainConfig, TrainLogistics


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    from ray_actors.features import extract_features
    from schemas.configs import ClipConfig, CorpusConfig, FeatureConfig
    from tasks.corpus import run_corpus

    root = tmp_path_factory.mktemp("train-bench")
    res = run_corpus(CorpusConfig(max_pieces=3, instruments=("flute",), voices=("soprano",), clip=ClipConfig()),
                     str(root / "corpus"), workers=2)
    return extract_features([res.clips_url], str(root / "features"), FeatureConfig(roles=("clean",)),
                            local=True)["features_url"]


def test_training_throughput_one_vs_two_cpu_workers(features, tmp_path):
    from infra.ray_cluster import ensure_ray
    from infra.storage import Storage
    from jobs.train import model_card
    from ray_actors.solver import fit
    from schemas.records import TrainRunLayout

    ensure_ray()
    rates = {}
    for workers in (1, 2):
        cfg = TrainConfig(domain="flute", features_url=features,
                          **{**TRAIN_PRESETS["tiny"], "steps": 200, "batch_size": 16, "checkpoint_every": 200,
                             "samples_at": 0})
        out = Storage(str(tmp_path / f"w{workers}"))
        t0 = time.perf_counter()
        fit(cfg, TrainLogistics(num_workers=workers, out_url=out.url), out.url, model_card(cfg), None, None)
        wall = time.perf_counter() - t0
        rates[workers] = json.loads(out.read_bytes(TrainRunLayout.PROGRESS))["samples_per_s"]
        print(f"\n[train] tiny preset, {workers} CPU worker(s): {rates[workers]:.1f} samples/s steady state "
              f"(global batch 16, crop 32 frames); whole fit incl. start-up {wall:.0f} s")
    print(f"[train] scaling 2 vs 1 workers: {rates[2] / rates[1]:.2f}x on {os.cpu_count()} cores")


def test_gpu_preset_bf16_samples_per_s_and_mfu():
    if not torch.cuda.is_available():
        print("\n[train gpu] no CUDA device here: measured on a lent GPU machine")
        return
    from schemas.diffusion import ModelConfig, unet_preset
    from tasks.builders import build_model
    from tasks.diffusion.precond import EDMLoss
    from tasks.diffusion.train import train_step

    p = TRAIN_PRESETS["gpu"]
    dev = torch.device("cuda")
    model = build_model(ModelConfig(unet=unet_preset(p["preset"], n_mels=128))).to(dev)
    loss_fn, opt = EDMLoss(model), torch.optim.AdamW(model.parameters(), lr=1e-4)
    y = torch.randn(p["batch_size"], 128, p["crop_frames"], device=dev)
    sigma, noise = model.sample_sigma(y.shape[0], device=dev), torch.randn_like(y)
    with FlopCounterMode(display=False) as fc:
        train_step(loss_fn, opt, y, sigma=sigma, noise=noise, autocast_dtype=torch.bfloat16)
    flops = fc.get_total_flops()
    for _ in range(3):
        train_step(loss_fn, opt, y, sigma=sigma, noise=noise, autocast_dtype=torch.bfloat16)
    torch.cuda.synchronize()
    t0, n = time.perf_counter(), 20
    for _ in range(n):
        train_step(loss_fn, opt, y, sigma=sigma, noise=noise, autocast_dtype=torch.bfloat16)
    torch.cuda.synchronize()
    steps_s = n / (time.perf_counter() - t0)
    name = torch.cuda.get_device_name(dev)
    peak = peak_bf16_tflops(name)
    achieved = flops * steps_s / 1e12
    print(f"\n[train gpu] {name}, gpu preset (difftransfer U-Net, batch {y.shape[0]} x 128 x {y.shape[-1]}, bf16): "
          f"{steps_s * y.shape[0]:.0f} samples/s, {achieved:.1f} TFLOP/s"
          + (f", MFU {achieved / peak:.1%}" if peak else ""))


def test_cpu_demo_training_ddp_against_in_process(features, tmp_path):
    """The `cpu-demo` preset through the solver's whole loop (data, step, EMA, progress), the
    default 2 Ray Train workers (DDP over gloo, 1 torch thread each) against one process with all
    cores. Run it with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
    to see an AVX2-only machine's kernels on a newer CPU."""
    from infra.ray_cluster import ensure_ray
    from infra.storage import Storage
    from jobs.ship import cpu_flags
    from jobs.train import model_card
    from ray_actors.solver import fit
    from schemas.records import TrainRunLayout

    ensure_ray()
    caps = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ}
    print(f"\n[train cpu-demo] CPU flags: {' '.join(cpu_flags()) or 'none'}; {os.cpu_count()} cores; "
          f"kernel caps {caps or 'none (the CPU own)'}")
    rates = {}
    for workers in (2, 0):
        cfg = TrainConfig(domain="flute", features_url=features,
                          **{**TRAIN_PRESETS["cpu-demo"], "steps": 100, "checkpoint_every": 100, "samples_at": 0,
                             "validation_segments": 8})
        out = Storage(str(tmp_path / f"cpu-demo-w{workers}"))
        fit(cfg, TrainLogistics(num_workers=workers, out_url=out.url, precision="fp32"), out.url,
            model_card(cfg), None, None)
        rates[workers] = json.loads(out.read_bytes(TrainRunLayout.PROGRESS))["samples_per_s"]
        print(f"[train cpu-demo] {'2 Ray Train workers (DDP, default)' if workers else 'in-process, all cores'}: "
              f"{rates[workers]:.1f} samples/s, fp32, steady state (last logging window)")
    print(f"[train cpu-demo] in-process / DDP: {rates[0] / rates[2]:.2f}x")
