"""Pitch Jaccard distance (docs/design.md; DiffTransfer's per-frame definition): per analysis frame,
the set of active pitches rounded to semitones; JD = 1 - |A ∩ B| / |A ∪ B|, averaged over the
frames where A ∪ B is not empty. Inputs are frame x semitone activations from any tracker."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class JaccardResult:
    distance: float
    active_frames: int
    compared_frames: int


def active_sets(activations: np.ndarray, threshold: float = 0.3, monophonic: bool = False) -> np.ndarray:
    """[frames, semitones] activations -> boolean pitch sets. Monophonic: only the strongest
    pitch of each frame, if it passes the threshold (the melody variant)."""
    a = np.asarray(activations, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"need activations [frames, semitones], got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("pitch activations contain NaN or infinite values")
    on = a >= threshold
    if not monophonic:
        return on
    top = np.zeros_like(on)
    frames = np.flatnonzero(on.any(axis=1))
    top[frames, a[frames].argmax(axis=1)] = True
    return top


def jaccard_distance(a: np.ndarray, b: np.ndarray) -> JaccardResult:
    """Mean per-frame JD of two boolean pitch-set matrices on the same frame grid (the longer is
    cut to the shorter: the signals are aligned at their start)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need [frames, semitones] with equal semitone axes, got {a.shape} and {b.shape}")
    t = min(len(a), len(b))
    a, b = a[:t].astype(bool), b[:t].astype(bool)
    union = (a | b).sum(axis=1)
    inter = (a & b).sum(axis=1)
    active = union > 0
    if not active.any():
        raise ValueError("no frame has an active pitch in either signal: JD is undefined "
                         "(silence, or a threshold above every activation)")
    return JaccardResult(float(np.mean(1 - inter[active] / union[active])), int(active.sum()), t)
