"""The conditional baseline (DiffTransfer, Comanducci et al. 2023; Palette-style): a denoiser
that also sees the source mel as extra input channels, trained on paired clips and sampled from
pure noise. Same samplers, same per-item noise as warm initialization."""
from __future__ import annotations

import torch

from schemas.diffusion import EDMConfig, SamplerConfig
from tasks.diffusion.precond import Denoiser, EDMPrecond
from tasks.diffusion.samplers import Callback, NoiseFn
from tasks.diffusion.warm import run_sampler, warm_sigmas


def conditioned(model: EDMPrecond, cond: torch.Tensor, label: torch.Tensor | int | None = None) -> Denoiser:
    """Bind the source mel (and, for a model of several instruments, the target's label): the
    result is an ordinary D(x; sigma) for any sampler."""
    if model.net.cfg.cond_channels == 0:
        raise ValueError("this model is unconditional (cond_channels=0); the baseline needs a "
                         "model trained with the source as condition channels")
    if label is None:
        return lambda x, sigma: model(x, sigma, cond)
    lab = torch.as_tensor(label, dtype=torch.long)
    return lambda x, sigma: model(x, sigma, cond, lab.to(x.device))


def labelled(model: EDMPrecond, label: torch.Tensor | int, guidance: float = 1.0) -> Denoiser:
    """Bind the class label (instrument) of a label-conditional model: the result is an ordinary
    D(x; sigma). guidance w != 1 is classifier-free guidance (Ho & Salimans 2022, eq. 6, in the
    x0 form): D = D_null + w (D_label - D_null); w = 1 is the conditional model alone."""
    if model.net.cfg.num_labels == 0:
        raise ValueError("this model has no class labels (num_labels=0); it models one instrument")
    label = torch.as_tensor(label, dtype=torch.long)
    if guidance == 1.0:
        return lambda x, sigma: model(x, sigma, None, label.to(x.device))
    null = torch.tensor(model.net.cfg.num_labels)

    def guided(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        d_label = model(x, sigma, None, label.to(x.device))
        d_null = model(x, sigma, None, null.to(x.device))
        return d_null + guidance * (d_label - d_null)
    return guided


def generate_conditional(denoiser: Denoiser, source: torch.Tensor, sampler: SamplerConfig, edm: EDMConfig,
                         noise: NoiseFn, *, callback: Callback | None = None) -> torch.Tensor:
    """Sample the target from x = sigma_max * eps on the full grid; `denoiser` is already bound
    to `source` (see `conditioned`), whose shape the output takes."""
    sigmas = warm_sigmas(sampler, edm).to(source.device)
    x = float(sigmas[0]) * noise(source)
    return run_sampler(sampler, denoiser, x, sigmas, noise=noise, callback=callback)
