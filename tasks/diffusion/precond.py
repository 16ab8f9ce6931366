"""EDM preconditioning and training loss (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", Table 1 and eq. 7-8). One object serves both training and
inference, so c_skip/c_out/c_in/c_noise live in exactly one place."""
from __future__ import annotations

from typing import Protocol

import torch

from schemas.diffusion import EDMConfig


class Denoiser(Protocol):
    """D(x; sigma): x [batch, ...], sigma [batch] -> estimate of the clean x, same shape as x."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor: ...


def _per_item(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """sigma as [batch, 1, ...] broadcastable over x."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    return s.reshape(-1, *([1] * (x.ndim - 1)))


class EDMPrecond(torch.nn.Module):
    """D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))   (Table 1).

    `net(x_in, c_noise, cond)` is the raw network F. `cond` (conditional baseline) is appended
    to the network input unscaled: it is clean data, not x + noise."""

    def __init__(self, net: torch.nn.Module, cfg: EDMConfig):
        super().__init__()
        self.net = net
        self.cfg = cfg

    def coefficients(self, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        sd = self.cfg.sigma_data
        c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
        c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
        c_in = 1 / (sd ** 2 + sigma ** 2).sqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float,
                cond: torch.Tensor | None = None, label: torch.Tensor | None = None) -> torch.Tensor:
        s = _per_item(sigma, x)
        c_skip, c_out, c_in, c_noise = self.coefficients(s)
        f = self.net((c_in * x).to(x.dtype), c_noise.reshape(-1), cond, **({"label": label} if label is not None else {}))
        return c_skip * x + c_out * f.to(x.dtype)

    def sample_sigma(self, batch: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
        """ln(sigma) ~ N(P_mean, P_std^2)   (Table 1, "Training")."""
        z = torch.randn(batch, generator=generator, device=device)
        return (self.cfg.P_mean + self.cfg.P_std * z).exp()

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2   (Table 1)."""
        sd = self.cfg.sigma_data
        return (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2

    def loss(self, y: torch.Tensor, *, sigma: torch.Tensor | None = None, noise: torch.Tensor | None = None,
             cond: torch.Tensor | None = None, generator: torch.Generator | None = None,
             mask: torch.Tensor | None = None, label: torch.Tensor | None = None) -> torch.Tensor:
        """EDM eq. 8: E[ lambda(sigma) ||D(y + n; sigma) - y||^2 ], per item (mean over elements).

        `mask` (same shape as y, 1 = real frame) leaves padded frames out of the loss; `label`
        (label-conditional models) the class index of each item."""
        if sigma is None:
            sigma = self.sample_sigma(y.shape[0], generator, y.device)
        if noise is None:
            noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        s = _per_item(sigma, y)
        err = (self(y + s * noise, sigma, cond, label) - y) ** 2
        w = self.loss_weight(s)
        if mask is None:
            return (w * err).flatten(1).mean(1)
        m = mask.to(err.dtype)
        return (w * err * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp(min=1)


class EDMLoss(torch.nn.Module):
    """The loss as a module (EDM's `EDMLoss`), so DDP can wrap it: forward = EDMPrecond.loss."""

    def __init__(self, precond: EDMPrecond):
        super().__init__()
        self.precond = precond

    def forward(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.precond.loss(y, **kwargs)
