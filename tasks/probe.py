"""The instrument probe: which instrument a log-mel sounds like. A multinomial logistic regression
over per-bin statistics of the log-mel's sounding frames (mean, spread and frame-to-frame change per
mel bin), fitted by L-BFGS on a corpus's clips across soundfonts. It reads log-mels, so it scores
audio outputs (a sweep's "target accuracy") and a latent model's decoded x̂0 alike (the adaptive
tau_init search, tasks/auto_t_init.py).

Why a linear probe on statistics, not a network: it is fitted in seconds, deterministic (a convex
problem, one optimum), small enough to ship with its data, and it has to run once per candidate
tau_init inside a transform, where a second network's cost would count against the transform's."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch

ACTIVE_NATS = 4.6  # a frame sounds when its loudest bin is within 40 dB (ln 100) of the clip's loudest


def descriptors(logmels: torch.Tensor) -> torch.Tensor:
    """[n, bins, frames] natural-log mels -> [n, 3*bins]: per bin, the mean, the standard deviation
    and the mean absolute frame-to-frame change over the sounding frames. Rests are left out:
    how long a piece rests says nothing of the instrument, and tempos differ per performance."""
    x = logmels.float()
    peak = x.amax(dim=1)                                              # [n, frames]
    w = (peak >= peak.amax(dim=1, keepdim=True) - ACTIVE_NATS).float()  # [n, frames]
    n = w.sum(dim=1, keepdim=True).clamp_min(1.0)                     # [n, 1]
    mean = (x * w[:, None]).sum(-1) / n
    std = (((x - mean[..., None]) ** 2 * w[:, None]).sum(-1) / n).clamp_min(0).sqrt()
    dw = w[:, 1:] * w[:, :-1]
    delta = ((x[..., 1:] - x[..., :-1]).abs() * dw[:, None]).sum(-1) / dw.sum(1, keepdim=True).clamp_min(1.0)
    return torch.cat([mean, std, delta], dim=1)


class InstrumentProbe(torch.nn.Module):
    """Standardised descriptors -> logits over `labels`."""

    def __init__(self, labels: tuple[str, ...], n_mels: int):
        super().__init__()
        self.labels, self.n_mels = tuple(labels), n_mels
        d = 3 * n_mels
        self.register_buffer("mu", torch.zeros(d))
        self.register_buffer("sd", torch.ones(d))
        self.linear = torch.nn.Linear(d, len(labels))

    def forward(self, logmels: torch.Tensor) -> torch.Tensor:
        if logmels.ndim != 3 or logmels.shape[1] != self.n_mels:
            raise ValueError(f"the probe reads [n, {self.n_mels}, frames] log-mels; got {tuple(logmels.shape)}")
        return self.logits_of(descriptors(logmels))

    def logits_of(self, desc: torch.Tensor) -> torch.Tensor:
        """Logits from descriptors (tasks.probe.descriptors) already computed."""
        return self.linear((desc - self.mu) / self.sd)

    @torch.no_grad()
    def probabilities(self, logmels: torch.Tensor) -> torch.Tensor:
        """[n, len(labels)] softmax probabilities."""
        return self.forward(logmels).softmax(-1)

    def p_of(self, logmels: torch.Tensor, label: str) -> torch.Tensor:
        """P(label | log-mel) per item."""
        if label not in self.labels:
            raise ValueError(f"the probe knows {list(self.labels)}, not {label!r}")
        return self.probabilities(logmels)[:, self.labels.index(label)]

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save({"labels": list(self.labels), "n_mels": self.n_mels, "state": self.state_dict()}, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "InstrumentProbe":
        try:
            blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            probe = cls(tuple(blob["labels"]), int(blob["n_mels"]))
            probe.load_state_dict(blob["state"])
        except (KeyError, TypeError, RuntimeError, ValueError) as e:
            raise ValueError(f"not an instrument probe checkpoint ({type(e).__name__}: {e}); expected the file "
                             "`reinstrument train-probe` writes") from None
        return probe.eval()


def fit_probe(x: torch.Tensor, y: torch.Tensor, labels: tuple[str, ...], *, l2: float = 1e-3,
              iterations: int = 200) -> InstrumentProbe:
    """Multinomial logistic regression on descriptors x [n, 3*bins] with class indices y [n]: the
    mean cross-entropy plus l2/2 |W|^2, minimised by L-BFGS from zero (convex: one optimum, so
    the same data always gives the same probe). Classes are weighted equally whatever their counts."""
    if len(set(y.tolist())) < 2:
        raise ValueError(f"a probe needs clips of at least two instruments; got only {sorted(set(labels[i] for i in y.tolist()))}")
    probe = InstrumentProbe(labels, x.shape[1] // 3)
    probe.mu.copy_(x.mean(0))
    probe.sd.copy_(x.std(0).clamp_min(1e-3))
    z = (x - probe.mu) / probe.sd
    counts = torch.bincount(y, minlength=len(labels)).float()
    weight = torch.where(counts > 0, counts.sum() / (counts.clamp_min(1) * (counts > 0).sum()), torch.zeros_like(counts))
    lin = probe.linear
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=iterations, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(z), y, weight=weight) + 0.5 * l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return probe.eval()


@dataclass(frozen=True)
class ProbeScore:
    """Accuracy of a probe on one group of clips (an instrument through one soundfont)."""
    instrument: str
    soundfont: str
    clips: int
    accuracy: float


def accuracy_by_group(probe: InstrumentProbe, desc: torch.Tensor, instruments: list[str],
                      soundfonts: list[str]) -> list[ProbeScore]:
    """Share of clips (as descriptors) the probe labels as their own instrument, per (instrument, soundfont)."""
    with torch.no_grad():
        pred = probe.logits_of(desc).argmax(-1).tolist()
    groups: dict[tuple[str, str], list[bool]] = {}
    for p, inst, sf in zip(pred, instruments, soundfonts):
        groups.setdefault((inst, sf), []).append(probe.labels[p] == inst)
    return [ProbeScore(i, s, len(v), float(np.mean(v))) for (i, s), v in sorted(groups.items())]
