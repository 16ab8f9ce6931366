"""The contract between the training solver (ray_actors/solver.py: checkpoints and resume, EMA,
precision, DDP, MLflow, previews, progress) and a model kind (the diffusion denoiser and the
conditional baseline today, tasks/diffusion/kind.py; a vocoder or an autoencoder tomorrow).
A kind says what to build, what one batch is, what its loss is, how to validate and what to
preview; the solver does everything else, the same way for every kind."""
from __future__ import annotations

from typing import Protocol

import torch

from schemas.configs import StrictConfig


class ModelKind(Protocol):
    def architecture(self) -> StrictConfig:
        """What tasks/builders.build_model turns into a fresh module (seeded by the solver)."""
        ...

    def loss_module(self, model: torch.nn.Module) -> torch.nn.Module:
        """A module whose forward(**batch) is the per-example loss; DDP wraps this one."""
        ...

    def batch(self, generator: torch.Generator, size: int) -> dict[str, torch.Tensor]:
        """One training batch; every draw from `generator` (seeded by (seed, step, rank))."""
        ...

    def validate(self, ema: torch.nn.Module) -> float:
        """A loss on fixed validation data (fixed draws): comparable across steps and models."""
        ...

    def preview(self, ema: torch.nn.Module, step: int) -> dict[str, bytes]:
        """Files to keep under the run's samples/ (spectrograms, audio), by name."""
        ...


class AdversarialKind(ModelKind, Protocol):
    """A kind trained against discriminators (the vocoder with adversarial_weight > 0). The solver
    builds them, gives them their own optimizer and checkpoint entries, and after each generator
    step takes one discriminator step on that step's audio."""

    def discriminator_architecture(self) -> StrictConfig | None:
        """None: this run has no adversary (the solver then trains as for any kind)."""
        ...

    def loss_module(self, model: torch.nn.Module, discriminator: torch.nn.Module | None = None) -> torch.nn.Module:
        """The generator's loss, its adversarial terms judged by `discriminator`."""
        ...

    def discriminator_loss_module(self, discriminator: torch.nn.Module) -> torch.nn.Module:
        """A module whose forward(**discriminator_batch()) is the discriminators' per-example loss."""
        ...

    def discriminator_batch(self) -> dict[str, torch.Tensor]:
        """The last generator step's real and generated samples (detached)."""
        ...

    def begin_step(self, step: int) -> None:
        """Called before each step (0-based, resumed runs included): where the generator's
        adversarial terms join only after the discriminators have warmed up."""
        ...


def adamw(params, *, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """Every run's AdamW, fused: one kernel over all parameters instead of ~6 tensor ops per
    parameter, which on CPU is 21 % of the latent denoiser's step (168 small tensors) and 4 % of
    the log-mel one's (measured on 2 cores, tests/benchmarks/test_bench_latent.py). The same
    update rule as the per-parameter loop (tests/unit/test_training_parts.py compares them)."""
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)


def settle_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """After a checkpoint's optimizer state is loaded and the model moved to its device: the state
    (moments, step counts) joins each parameter's device (load_state_dict put it where the parameters
    were, the CPU, and a GPU step refuses state left there), and each group is fused again
    (load_state_dict restores the file's `fused` flag, so a checkpoint saved by the per-parameter
    loop would resume unfused; the flag selects a kernel, not state)."""
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = True, None
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                dtype = torch.float32 if key == "step" else value.dtype  # fused reads float32 step counts
                state[key] = value.to(device=param.device, dtype=dtype)


def optimise(loss_module: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], *,
             max_grad_norm: float | None = 1.0, autocast_dtype: torch.dtype | None = None) -> float:
    """One step: the batch-mean loss before the update; gradients clipped to max_grad_norm."""
    loss_module.train()
    optimizer.zero_grad(set_to_none=True)
    device = next(iter(batch.values())).device.type
    with torch.autocast(device, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        loss = loss_module(**batch).mean()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite training loss {loss.item()}")
    loss.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(loss_module.parameters(), max_grad_norm)
    optimizer.step()
    return float(loss.detach())
