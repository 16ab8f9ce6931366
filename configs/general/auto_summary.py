"""Tables of `--t-init auto` against the fixed-tau_init curve of the same sweep (docs/adaptive-t-init.md).

Usage: python configs/general/auto_summary.py SWEEP_FOLDER [SWEEP_FOLDER ...]
Each folder is OUT/sweeps/<sweep_id> of a sweep run with `--t-init auto` (or an `auto` section in
--config). Per sweep: every fixed point and the auto point with their 95 % intervals, then the
fixed curve's non-dominated points (its trade-off front) interpolated linearly at auto's mean JD
(FAD there) and at auto's FAD (JD there), how far auto is below each (the goal: 25 %), and whether
a fixed point dominates auto outright."""
from __future__ import annotations

import sys

import pyarrow.parquet as pq


def _points(rows: list[dict]) -> dict[tuple, dict]:
    pts: dict[tuple, dict] = {}
    for r in rows:
        pts.setdefault((r["method"], r["t_init"], r["lam"]), {})[r["metric"]] = (r["mean"], r["ci_low"], r["ci_high"])
    return pts


def _interp(curve: list[tuple[float, float]], x: float) -> float | None:
    """y at x on the piecewise-linear curve of (x, y) sorted by x; None outside it."""
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if x0 <= x <= x1 and x1 > x0:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def _cell(v) -> str:
    return "–" if v is None else f"{v[0]:.3g} [{v[1]:.3g}, {v[2]:.3g}]"


def summarise(folder: str) -> str:
    pts = _points(pq.read_table(f"{folder.rstrip('/')}/metrics.parquet").to_pylist())
    lines = [f"### {folder.rstrip('/').rsplit('/', 1)[-1]}", "",
             "| point | FAD | JD | F1 vs MIDI | target accuracy |", "|---|---|---|---|---|"]
    order = sorted(pts, key=lambda k: ({"warm_init": 0, "auto": 1}.get(k[0], 2), -(k[1] or 0)))
    for k in order:
        m = pts[k]
        name = (f"τ {k[1]:g}, λ {k[2]:g}" if k[0] == "warm_init" else f"auto (mean τ {k[1]:.2f}), λ {k[2]:g}"
                if k[0] == "auto" else {"generation": "plain generation", "target": "true target"}.get(k[0], k[0]))
        lines.append(f"| {name} | {_cell(m.get('fad'))} | {_cell(m.get('jd'))} | {_cell(m.get('f1_midi'))} | "
                     f"{_cell(m.get('target_accuracy'))} |")
    auto = next((m for k, m in pts.items() if k[0] == "auto"), None)
    lam = next((k[2] for k in pts if k[0] == "auto"), None)
    fixed = [(m["jd"][0], m["fad"][0]) for k, m in pts.items() if k[0] == "warm_init" and k[2] == lam
             and "jd" in m and "fad" in m]
    if auto and fixed:
        # the fixed curve as a trade-off: its non-dominated points (lower JD or lower FAD than every
        # other), so "at equal FAD" reads a monotone front, never a hump of the raw curve
        front = sorted(p for p in fixed if not any(q != p and q[0] <= p[0] and q[1] <= p[1] for q in fixed))
        by_jd = front
        by_fad = sorted((f, j) for j, f in front)
        fad_there = _interp(by_jd, auto["jd"][0])
        jd_there = _interp(by_fad, auto["fad"][0])
        lines += ["", f"Fixed front (λ {lam:g}, {len(front)} of {len(fixed)} points) at auto's JD {auto['jd'][0]:.3f}: FAD "
                  + (f"{fad_there:.3g}; auto's {auto['fad'][0]:.3g} is {1 - auto['fad'][0] / fad_there:+.1%} lower"
                     if fad_there else "outside the curve")
                  + f". At auto's FAD {auto['fad'][0]:.3g}: JD "
                  + (f"{jd_there:.3f}; auto's {auto['jd'][0]:.3f} is {1 - auto['jd'][0] / jd_there:+.1%} lower"
                     if jd_there else "outside the curve") + ". Goal: 25 % lower on either."]
        # where the curve is not a trade-off (FAD rising with JD), "equal FAD" can flatter: say so
        better = [(j, f) for j, f in fixed if j <= auto["jd"][0] and f <= auto["fad"][0]]
        if better:
            j, f = min(better)
            lines.append(f"Dominated: the fixed point at JD {j:.3f}, FAD {f:.3g} is at least as good on both.")
        else:
            lines.append("Not dominated by any fixed point.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print("\n".join(summarise(f) for f in sys.argv[1:]))
