"""The realism/faithfulness trade-off of a tau_init sweep: its Pareto front and the recommended
tau_init. The papers leave the choice to the user; the product makes it by a stated rule:

1. per lambda, take the grid points (tau_init, JD, FAD) with both metrics measured;
2. normalise JD and FAD to [0, 1] over those points (min-max; a constant metric maps to 0);
3. keep the Pareto front (no other point has JD <= and FAD <= with one strictly lower);
4. recommend the front point closest to the utopia corner (0, 0) in normalised units (the knee);
   ties go to the larger tau_init (the more faithful, cheaper setting)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Point:
    t_init: float
    jd: float
    fad: float


@dataclass(frozen=True)
class Recommendation:
    t_init: float
    jd: float
    fad: float
    front: list[Point]
    rule: str = "knee: front point nearest (0,0) after min-max normalising JD and FAD"


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """Points no other point dominates (lower is better on both axes), sorted by JD."""
    front = [p for p in points
             if not any(q.jd <= p.jd and q.fad <= p.fad and (q.jd < p.jd or q.fad < p.fad) for q in points)]
    return sorted(front, key=lambda p: (p.jd, p.fad))


def recommend(points: Sequence[Point]) -> Recommendation:
    pts = [p for p in points if np.isfinite(p.jd) and np.isfinite(p.fad)]
    if not pts:
        raise ValueError("no grid point has both JD and FAD: nothing to recommend")
    jd = np.array([p.jd for p in pts])
    fad = np.array([p.fad for p in pts])
    span = lambda v: (v - v.min()) / (v.max() - v.min()) if v.max() > v.min() else np.zeros_like(v)  # noqa: E731
    norm = {id(p): (a, b) for p, a, b in zip(pts, span(jd), span(fad))}
    front = pareto_front(pts)
    best = min(front, key=lambda p: (float(np.hypot(*norm[id(p)])), -p.t_init))
    return Recommendation(best.t_init, best.jd, best.fad, front)


def fad_trend(fad_by_t_init: dict[float, float]) -> str | None:
    """One line on how FAD moves as tau_init falls from 1 (the guide itself), for a person
    reading a sweep table; None when there is no guide point or nothing below it."""
    if 1.0 not in fad_by_t_init or len(fad_by_t_init) < 2:
        return None
    guide = fad_by_t_init[1.0]
    lower = {t: f for t, f in fad_by_t_init.items() if t < 1.0}
    best_t = min(lower, key=lower.get)
    lowest_t = min(lower)
    if lower[best_t] >= guide:
        return (f"FAD does not fall below the guide's ({guide:.1f}) at any tau_init: this model's outputs are "
                "further from the target than the guides are. A stronger model (more training steps, or the gpu "
                "preset) is needed for the trade-off.")
    line = f"FAD falls from {guide:.1f} (the guide, tau_init=1) to {lower[best_t]:.1f} at tau_init={best_t:g}"
    if best_t != lowest_t and lower[lowest_t] > lower[best_t]:
        line += (f", then rises to {lower[lowest_t]:.1f} at tau_init={lowest_t:g}: below {best_t:g} the output "
                 "leaves the guide's structure faster than it is made realistic (with lambda 0 and no churn "
                 "this happens even with an exact denoiser: the bare guide is too little noise for a large "
                 "sigma_start; churn at large sigma, --churn, or a stronger model moves that point lower)")
    return line + "."
