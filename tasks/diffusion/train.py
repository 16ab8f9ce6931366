"""One optimisation step of the EDM objective, shared by unit tests and the Ray Train loop."""
from __future__ import annotations

import torch

from tasks.diffusion.precond import EDMPrecond


def train_step(model: EDMPrecond, optimizer: torch.optim.Optimizer, y: torch.Tensor, *,
               generator: torch.Generator | None = None, cond: torch.Tensor | None = None,
               mask: torch.Tensor | None = None, sigma: torch.Tensor | None = None,
               noise: torch.Tensor | None = None, max_grad_norm: float | None = 1.0) -> float:
    """Loss (EDM eq. 8, mean over the batch) before the update; gradients clipped to max_grad_norm."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = model.loss(y, sigma=sigma, noise=noise, cond=cond, generator=generator, mask=mask).mean()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite training loss {loss.item()}")
    loss.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    return float(loss.detach())
