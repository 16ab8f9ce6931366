"""`make bench`, training: samples/s of the tiny preset on 1 vs 2 Ray Train CPU workers and of the
cpu-demo preset on 2 workers vs in-process (steady state: the last logging window, start-up
excluded), and on a GPU the gpu preset's bf16 samples/s and model FLOP utilisation."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

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


def _fit_rate(cfg: TrainConfig, logistics: TrainLogistics) -> float:
    """Steady-state samples/s of a whole fit (the solver's last logging window)."""
    from infra.storage import Storage
    from jobs.train import model_card
    from ray_actors.solver import fit
    from schemas.records import TrainRunLayout

    fit(cfg, logistics, logistics.out_url, model_card(cfg), None, None)
    return json.loads(Storage(logistics.out_url).read_bytes(TrainRunLayout.PROGRESS))["samples_per_s"]


def _machine(tag: str) -> None:
    """The line every figure here is read against: CPU flags, cores, kernel caps."""
    from jobs.ship import cpu_flags

    caps = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ}
    print(f"\n[{tag}] CPU flags: {' '.join(cpu_flags()) or 'none'}; {os.cpu_count()} cores; "
          f"kernel caps {caps or 'none (the CPU own)'}")


def _cpu_demo_fit_cfg(features_url: str) -> TrainConfig:
    """The `cpu-demo` preset, 100 steps, for whole-loop rates (one checkpoint, no previews)."""
    return TrainConfig(domain="flute", features_url=features_url,
                       **{**TRAIN_PRESETS["cpu-demo"], "steps": 100, "checkpoint_every": 100, "samples_at": 0,
                          "validation_segments": 8})


def _in_fresh_interpreter(code: str, *args: str, keep: bool) -> str:
    """Run `code` in a new Python with the allocator setting `keep` (process-wide, so never in this
    process); returns the last line it printed."""
    res = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parents[2]), *args],
                         env=os.environ | {"REINSTRUMENT_KEEP_FREED_MEMORY": str(int(keep))},
                         capture_output=True, text=True, check=True)
    return res.stdout.strip().splitlines()[-1]


def cpu_demo_step() -> tuple[torch.nn.Module, torch.optim.Optimizer, dict[str, torch.Tensor]]:
    """The `cpu-demo` preset's training step on one random batch: EDM's loss module over the
    model, the solver's optimizer, the batch (seed 0)."""
    from schemas.diffusion import ModelConfig, unet_preset
    from tasks.builders import build_model
    from tasks.diffusion.precond import EDMLoss
    from tasks.solver import adamw

    torch.manual_seed(0)
    p = TRAIN_PRESETS["cpu-demo"]
    model = build_model(ModelConfig(unet=unet_preset(p["preset"], n_mels=128)))
    b, frames = p["batch_size"], p["crop_frames"]
    batch = {"y": torch.randn(b, 128, frames), "sigma": model.sample_sigma(b), "noise": torch.randn(b, 128, frames)}
    return EDMLoss(model), adamw(model.parameters(), lr=1e-4, weight_decay=0.0), batch


def test_training_throughput_one_vs_two_cpu_workers(features, tmp_path):
    from infra.ray_cluster import ensure_ray

    ensure_ray()
    rates = {}
    for workers in (1, 2):
        cfg = TrainConfig(domain="flute", features_url=features,
                          **{**TRAIN_PRESETS["tiny"], "steps": 200, "batch_size": 16, "checkpoint_every": 200,
                             "samples_at": 0})
        t0 = time.perf_counter()
        rates[workers] = _fit_rate(cfg, TrainLogistics(num_workers=workers, out_url=str(tmp_path / f"w{workers}")))
        wall = time.perf_counter() - t0
        print(f"\n[train] tiny preset, {workers} CPU worker(s): {rates[workers]:.1f} samples/s steady state "
              f"(global batch 16, crop 32 frames); whole fit incl. start-up {wall:.0f} s")
    print(f"[train] scaling 2 vs 1 workers: {rates[2] / rates[1]:.2f}x on {os.cpu_count()} cores")


def test_gpu_preset_bf16_samples_per_s_and_mfu():
    """The denoiser row of `make bench-gpu` (one measurement, written once in bench_gpu.py)."""
    if not torch.cuda.is_available():
        print("\n[train gpu] no CUDA device here: measured on a lent GPU machine (make bench-gpu)")
        return
    from tests.benchmarks import bench_gpu

    bench_gpu.ROWS.clear()
    assert bench_gpu.main(["--only", "denoiser"]) == 0


def test_cpu_demo_training_ddp_against_in_process(features, tmp_path):
    """The `cpu-demo` preset through the solver's whole loop (data, step, EMA, progress), the
    default 2 Ray Train workers (DDP over gloo, 1 torch thread each) against one process with all
    cores. Run it with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
    to see an AVX2-only machine's kernels on a newer CPU."""
    from infra.ray_cluster import ensure_ray

    ensure_ray()
    _machine("train cpu-demo")
    rates = {}
    for workers in (2, 0):
        rates[workers] = _fit_rate(_cpu_demo_fit_cfg(features), TrainLogistics(num_workers=workers, precision="fp32",
                                                       out_url=str(tmp_path / f"cpu-demo-w{workers}")))
        print(f"[train cpu-demo] {'2 Ray Train workers (DDP, default)' if workers else 'in-process, all cores'}: "
              f"{rates[workers]:.1f} samples/s, fp32, steady state (last logging window)")
    print(f"[train cpu-demo] in-process / DDP: {rates[0] / rates[2]:.2f}x")


# One `cpu-demo` fit in a fresh interpreter, in-process on all cores, fp32. argv[4] "loop" runs the
# optimizer as issue 22 found it (torch's per-parameter AdamW), "fused" as it ships; the allocator
# comes from REINSTRUMENT_KEEP_FREED_MEMORY. Fresh interpreters because the allocator setting is
# process-wide and cannot be undone. Prints the steady-state samples/s.
_FIT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import torch
import ray_actors.solver as solver
from infra.storage import Storage
from jobs.train import model_card
from schemas.records import TrainRunLayout
from schemas.training import TrainLogistics
from tests.benchmarks.test_bench_training import _cpu_demo_fit_cfg
if sys.argv[4] == "loop":
    solver.adamw = lambda params, *, lr, weight_decay, betas=(0.9, 0.999): torch.optim.AdamW(
        params, lr=lr, betas=betas, weight_decay=weight_decay, foreach=False)
    solver.settle_optimizer = lambda opt: None
cfg = _cpu_demo_fit_cfg(sys.argv[2])
logistics = TrainLogistics(num_workers=0, precision="fp32", out_url=sys.argv[3])
solver.fit(cfg, logistics, logistics.out_url, model_card(cfg), None, None)
print(json.loads(Storage(logistics.out_url).read_bytes(TrainRunLayout.PROGRESS))["samples_per_s"])
"""


def _fresh_fit(features: str, out: Path, optimizer: str, keep: bool) -> float:
    return float(_in_fresh_interpreter(_FIT, features, str(out), optimizer, keep=keep))


def test_cpu_demo_training_issue_time_against_now(features, tmp_path, monkeypatch):
    """Issue 22's training point in one run: the `cpu-demo` preset's whole loop, fp32, as users ran
    it when the issue was filed (2 Ray Train workers with DDP, per-parameter AdamW, glibc's
    allocator as it comes) against how it ships (in-process, fused AdamW, freed memory kept). The
    DDP run here has the fused optimizer (Ray's workers import the solver as it is), so the
    issue-time figure is that run scaled by the loop/fused ratio of two in-process fits of this run.
    Since stop 41 that DDP run also has gradients as bucket views (1.035x, measured apart), so the
    issue-time figure here is that much too fast and the printed gain that much too small.
    Run it under the AVX2 caps (see the test above) for the AVX2-only figure the issue asks about."""
    from infra.ray_cluster import ensure_ray

    _machine("train cpu-demo")
    loop = _fresh_fit(features, tmp_path / "loop", "loop", keep=False)
    fused = _fresh_fit(features, tmp_path / "fused", "fused", keep=False)
    now = _fresh_fit(features, tmp_path / "now", "fused", keep=True)
    ensure_ray()
    monkeypatch.setenv("REINSTRUMENT_KEEP_FREED_MEMORY", "0")  # forwarded to the Ray Train workers
    cfg = _cpu_demo_fit_cfg(features)
    ddp = _fit_rate(cfg, TrainLogistics(num_workers=2, precision="fp32", out_url=str(tmp_path / "ddp")))
    monkeypatch.setenv("REINSTRUMENT_KEEP_FREED_MEMORY", "1")
    ddp_now = _fit_rate(cfg, TrainLogistics(num_workers=2, precision="fp32", out_url=str(tmp_path / "ddp-now")))
    issue_time = ddp * loop / fused
    print(f"[train cpu-demo] fp32, steady state, samples/s: in-process per-parameter AdamW {loop:.1f}, fused "
          f"{fused:.1f} ({fused / loop:.2f}x), fused with freed memory kept {now:.1f} ({now / fused:.2f}x); "
          f"2 Ray Train workers (DDP), fused, glibc's allocator {ddp:.1f}, freed memory kept {ddp_now:.1f} "
          f"({ddp_now / ddp:.2f}x)")
    print(f"[train cpu-demo] issue-time default (DDP, per-parameter AdamW, glibc's allocator) ~{issue_time:.1f} "
          f"samples/s; as it ships in-process {now:.1f}: {now / issue_time:.2f}x (goal >= 1.5x on AVX2 kernels)")


_STEP = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from infra.allocator import keep_freed_memory
state = keep_freed_memory()
from tasks.solver import optimise
from tests.benchmarks.test_bench_training import cpu_demo_step
loss, opt, batch = cpu_demo_step()
b = batch["y"].shape[0]
for _ in range(5):
    optimise(loss, opt, batch)
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(20):
    optimise(loss, opt, batch)
dt, r1 = (time.perf_counter() - t0) / 20, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"state": state, "samples_per_s": b / dt, "faults": (r1.ru_minflt - r0.ru_minflt) / 20,
                  "sys_ms": (r1.ru_stime - r0.ru_stime) / 20 * 1e3, "ms": dt * 1e3}))
"""


def test_keep_freed_memory_side_by_side():
    """The `cpu-demo` step alone (batch 16, fp32 unless the caps allow AMX), in two fresh
    interpreters: glibc's allocator as it comes against infra/allocator.py's setting; minor page
    faults and kernel time per step show where the difference goes."""
    _machine("allocator")
    rows = {}
    for keep in ("0", "1"):
        rows[keep] = r = json.loads(_in_fresh_interpreter(_STEP, keep=keep == "1"))
        print(f"[allocator] freed memory {r['state']:>4}: {r['ms']:.0f} ms/step, {r['samples_per_s']:.1f} samples/s, "
              f"{r['faults']:.0f} minor page faults and {r['sys_ms']:.1f} ms kernel time per step")
    print(f"[allocator] kept / glibc's default: {rows['1']['samples_per_s'] / rows['0']['samples_per_s']:.2f}x")


def test_cpu_demo_step_against_the_machines_gemm_rate():
    """How far kernel and threading choices can take the `cpu-demo` step on this CPU: the step's
    achieved FLOP rate (FLOPs counted by torch's FlopCounterMode, one process, all cores, fp32)
    against a large fp32 GEMM's on the same threads, the rate the convolutions' GEMMs could reach
    at best. Their ratio bounds any speed-up that keeps the model and its arithmetic (issue 22's
    AVX2 point asks 1.5x at the same loss curve). Run it under the AVX2 caps of the test above."""
    from jobs.ship import cpu_flags
    from tasks.solver import optimise
    from torch.utils.flop_counter import FlopCounterMode

    loss, opt, batch = cpu_demo_step()
    b, frames = batch["y"].shape[0], batch["y"].shape[-1]
    with FlopCounterMode(display=False) as fc:
        optimise(loss, opt, batch)
    step_flops = fc.get_total_flops()

    def per_call(fn, n: int) -> float:
        for _ in range(3):
            fn()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n

    step_s = per_call(lambda: optimise(loss, opt, batch), 20)
    a, c = torch.randn(2048, 2048), torch.randn(2048, 2048)
    gemm_rate = 2 * 2048 ** 3 / per_call(lambda: a @ c, 10)
    step_rate = step_flops / step_s
    caps = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ}
    print(f"\n[train cpu-demo step] CPU flags: {' '.join(cpu_flags()) or 'none'}; {torch.get_num_threads()} threads; "
          f"kernel caps {caps or 'none (the CPU own)'}; torch capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"[train cpu-demo step] {step_flops / 1e9:.1f} GFLOP per step (batch {b} x 128 x {frames}), "
          f"{step_s * 1e3:.0f} ms: {step_rate / 1e9:.0f} GFLOP/s, {b / step_s:.1f} samples/s")
    print(f"[train cpu-demo step] fp32 GEMM 2048^3 on the same threads: {gemm_rate / 1e9:.0f} GFLOP/s; the step runs at "
          f"{step_rate / gemm_rate:.0%} of it: at most {gemm_rate / step_rate:.2f}x from kernels, threads and overheads "
          f"together, if every FLOP of the step ran at the GEMM's rate")
