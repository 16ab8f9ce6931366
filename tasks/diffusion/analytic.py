"""Distributions whose ideal denoiser is known in closed form, to check samplers exactly.

Data x0 ~ sum_k w_k N(mu_k, s_k^2 I) in d dimensions; x = x0 + sigma n. Then
    p_sigma(x) = sum_k w_k N(x; mu_k, (s_k^2 + sigma^2) I),
    E[x0 | x, k] = mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k),
    D(x; sigma) = E[x0 | x] = sum_k r_k(x) E[x0 | x, k],   r_k = posterior of component k.
In 1-D the probability-flow ODE is a monotone flow, so it maps quantiles to quantiles: the exact
ODE solution from sigma_a to sigma_b is F_b^{-1}(F_a(x)) with F the marginal CDFs."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GaussianMixture:
    weights: tuple[float, ...]
    means: tuple[tuple[float, ...], ...]   # [K][d]
    stds: tuple[float, ...]               # isotropic std per component

    def __post_init__(self):
        if not (len(self.weights) == len(self.means) == len(self.stds)) or not self.weights:
            raise ValueError("weights, means and stds need one entry per component")
        if abs(sum(self.weights) - 1) > 1e-9:
            raise ValueError(f"weights must sum to 1, got {sum(self.weights)}")

    @property
    def dim(self) -> int:
        return len(self.means[0])

    def _t(self, like: torch.Tensor):
        kw = dict(dtype=like.dtype, device=like.device)
        return (torch.tensor(self.weights, **kw), torch.tensor(self.means, **kw), torch.tensor(self.stds, **kw))

    def responsibilities(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """Posterior P(k | x) at noise level sigma: x [B, d], sigma [B] or scalar -> [B, K]."""
        w, mu, s = self._t(x)
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1)
        var = s[None] ** 2 + sig ** 2                                   # [B, K]
        sq = ((x[:, None, :] - mu[None]) ** 2).sum(-1)                  # [B, K]
        logp = w.log()[None] - 0.5 * sq / var - 0.5 * self.dim * var.log()
        return torch.softmax(logp, dim=1)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The ideal D(x; sigma) for x [B, d] (or [B, ...] flattened to d), sigma [B]."""
        shape = x.shape
        x = x.reshape(shape[0], -1)
        w, mu, s = self._t(x)
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1)
        r = self.responsibilities(x, sig.reshape(-1))
        gain = s[None] ** 2 / (s[None] ** 2 + sig ** 2)                 # [B, K]
        cond_mean = mu[None] + gain[..., None] * (x[:, None, :] - mu[None])
        return (r[..., None] * cond_mean).sum(1).reshape(shape)

    __call__ = denoise

    def sample(self, n: int, generator: torch.Generator, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0 [n, d], component index [n])."""
        w, mu, s = (torch.tensor(v, dtype=dtype) for v in (self.weights, self.means, self.stds))
        k = torch.multinomial(w, n, replacement=True, generator=generator)
        return mu[k] + s[k, None] * torch.randn(n, self.dim, generator=generator, dtype=dtype), k

    # 1-D closed forms (d == 1) ----------------------------------------------------------
    def cdf(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        self._need_1d()
        w, mu, s = self._t(x)
        sd = (s ** 2 + sigma ** 2).sqrt()
        z = (x.reshape(-1, 1) - mu[:, 0][None]) / sd[None]
        return (w[None] * 0.5 * (1 + torch.erf(z / math.sqrt(2)))).sum(1).reshape(x.shape)

    def icdf(self, q: torch.Tensor, sigma: float, iters: int = 200) -> torch.Tensor:
        """Inverse CDF by bisection (the CDF is strictly increasing)."""
        self._need_1d()
        span = max(abs(m[0]) for m in self.means) + 40 * math.sqrt(max(self.stds) ** 2 + sigma ** 2)
        lo, hi = torch.full_like(q, -span), torch.full_like(q, span)
        for _ in range(iters):
            mid = (lo + hi) / 2
            below = self.cdf(mid, sigma) < q
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return (lo + hi) / 2

    def ode_map(self, x: torch.Tensor, sigma_from: float, sigma_to: float) -> torch.Tensor:
        """Exact PF-ODE solution from sigma_from to sigma_to (1-D): quantile to quantile."""
        return self.icdf(self.cdf(x, sigma_from), sigma_to)

    def _need_1d(self) -> None:
        if self.dim != 1:
            raise ValueError(f"closed-form CDFs are 1-D only; this mixture has d={self.dim}")
