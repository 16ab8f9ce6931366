"""One optimisation step of the EDM objective, shared by unit tests and the Ray Train loop."""
from __future__ import annotations

import math
import os

import torch

from tasks.diffusion.noise import item_seed
from tasks.diffusion.precond import EDMLoss, EDMPrecond
from tasks.solver import optimise


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, y: torch.Tensor, *,
               generator: torch.Generator | None = None, cond: torch.Tensor | None = None,
               mask: torch.Tensor | None = None, sigma: torch.Tensor | None = None,
               noise: torch.Tensor | None = None, max_grad_norm: float | None = 1.0,
               autocast_dtype: torch.dtype | None = None) -> float:
    """One step of the EDM loss (eq. 8, mean over the batch) through the solver's `optimise`.
    `model` is an EDMPrecond or an EDMLoss (possibly DDP-wrapped, so gradients are all-reduced)."""
    loss_fn = EDMLoss(model) if isinstance(model, EDMPrecond) else model
    batch = {"y": y, "sigma": sigma, "noise": noise, "cond": cond, "mask": mask}
    return optimise(loss_fn, optimizer, {k: v for k, v in batch.items() if v is not None} | {"generator": generator},
                    max_grad_norm=max_grad_norm, autocast_dtype=autocast_dtype)


def autocast_dtype_for(precision: str, device_type: str) -> torch.dtype | None:
    """The autocast dtype of a training step (None: plain fp32). "auto" takes bf16 where the
    hardware multiplies bf16 natively: CUDA, and CPUs with AMX tiles, where the cpu-demo step ran
    1.47x faster than fp32 (measured on 2 cores); other CPUs emulate bf16 and stay in fp32."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision {precision!r}; expected auto, fp32 or bf16")
    if precision == "auto":
        native = device_type == "cuda" or (device_type == "cpu" and _cpu_has_amx())
        return torch.bfloat16 if native else None
    return torch.bfloat16 if precision == "bf16" else None


def _cpu_has_amx() -> bool:
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private in torch 2.11; absent: no
    # oneDNN, which runs the convolutions, obeys ONEDNN_MAX_CPU_ISA: capped below AMX (AVX2, say,
    # to run an older machine's kernels) bf16 is emulated there, ~10x slower than fp32 (measured)
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return bool(probe and probe()) and (isa == "ALL" or "AMX" in isa)


# --- the pieces of a deterministic, resumable training run --------------------------------
# There is no RNG state to checkpoint: every random draw of step s on rank r comes from a
# generator seeded by (seed, s, r), so a resumed run replays exactly what an unbroken one does.

def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(item_seed(seed, "train-step", step, rank))


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Linear warm-up over warmup_steps, then constant or cosine decay to 0 at total_steps."""
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    # one fused lerp over all parameters (the same e + (1 - decay)(p - e) per value as Tensor.lerp_)
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def crop_batch(segments: torch.Tensor, valid_frames: torch.Tensor, index: torch.Tensor, crop_frames: int,
               generator: torch.Generator, cond: torch.Tensor | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Random crops [B, bins, crop] of the chosen segments, inside their valid frames where they
    are long enough; the mask marks real (not padded) frames for the loss. `cond` (paired
    source segments, conditional baseline) is cropped at the same frames."""
    out, masks, conds = [], [], []
    for i in index.tolist():
        valid = int(valid_frames[i])
        hi = max(0, min(valid, segments.shape[-1]) - crop_frames)
        a = int(torch.randint(hi + 1, (1,), generator=generator))
        out.append(segments[i, :, a:a + crop_frames])
        if cond is not None:
            conds.append(cond[i, :, a:a + crop_frames])
        m = torch.zeros(crop_frames)
        m[:max(0, min(crop_frames, valid - a))] = 1
        masks.append(m)
    x = torch.stack(out)
    return x, torch.stack(masks)[:, None, :].expand_as(x), (torch.stack(conds) if conds else None)


def validation_sigmas(n: int, P_mean: float, P_std: float) -> torch.Tensor:
    """n fixed noise levels at the quantiles (i + 0.5)/n of the training distribution of ln(sigma):
    a deterministic, low-variance estimate of the expected loss."""
    q = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return (P_mean + P_std * math.sqrt(2) * torch.erfinv(2 * q - 1)).exp().float()


@torch.no_grad()
def validation_loss(model: EDMPrecond, segments: torch.Tensor, valid_frames: torch.Tensor, crop_frames: int,
                    seed: int = 1234, batch_size: int = 32, cond: torch.Tensor | None = None,
                    labels: torch.Tensor | None = None) -> float:
    """Mean EDM loss of `model` over fixed crops, sigmas and noise: comparable across models."""
    model.eval()
    g = torch.Generator().manual_seed(seed)  # draws on the CPU: the same on any device
    n = segments.shape[0]
    x, mask, c = crop_batch(segments, valid_frames, torch.arange(n), crop_frames, g, cond)
    noise = torch.randn(x.shape, generator=g)
    sig = validation_sigmas(n, model.cfg.P_mean, model.cfg.P_std)
    dev = next(model.parameters()).device
    total = 0.0
    for a in range(0, n, batch_size):
        sl = slice(a, a + batch_size)
        total += float(model.loss(x[sl].to(dev), sigma=sig[sl].to(dev), noise=noise[sl].to(dev),
                                  mask=mask[sl].to(dev), cond=None if c is None else c[sl].to(dev),
                                  label=None if labels is None else labels[sl].to(dev)).sum())
    return total / n
