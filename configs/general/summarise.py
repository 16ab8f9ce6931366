"""The held-out tables of README/docs from `configs/general/evaluate.sh`'s comparisons: per
held-out set and target instrument, each method's FAD (same-repertoire real reference), JD to the
guide and F1 to the MIDI, with 95 % intervals, and FAD as a multiple of the true target's.

    .venv/bin/python configs/general/summarise.py DATA/eval > tables.md"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

ORDER = ["guide", "identity", "warm", "ddib", "conditional", "generation", "target"]


def fmt(r: dict | None, digits: int) -> str:
    if r is None:
        return "–"
    return f"{r['mean']:.{digits}f} [{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}]"


def results(root: Path) -> list[tuple[dict, dict]]:
    """(result.json, {method key: {metric: row}}) per comparison, by target then held-out set."""
    out = []
    for res_path in root.glob("compare/*/result.json"):
        res = json.loads(res_path.read_text())
        rows = pq.read_table(io.BytesIO((res_path.parent / "comparison.parquet").read_bytes())).to_pylist()
        by: dict = {}
        for r in rows:
            if r["subset"] == "all" and r["task"] == "timbre":
                by.setdefault(r["key"], {"label": r["label"]})[r["metric"]] = r
        out.append((res, by))
    return sorted(out, key=lambda rb: (str(rb[0].get("target")), held_name(rb[0])))


def held_name(res: dict) -> str:
    return res.get("inputs", "?").rstrip("/").split("/")[-2]


def overview(root: Path) -> list[str]:
    """One line per (target, held-out set): FAD as a multiple of the true target's, JD and F1."""
    out = ["| target | held-out set | operating point | warm init: FAD × true target | DDIB | plain generation | "
           "warm init JD / F1 | DDIB JD / F1 | true target FAD |", "|---|---|---|---|---|---|---|---|---|"]
    for res, by in results(root):
        t = by.get("target", {}).get("fad", {}).get("mean")
        x = lambda k: f"{by[k]['fad']['mean'] / t:.1f}×" if t and k in by and "fad" in by[k] else "–"  # noqa: E731
        jf = lambda k: (f"{by[k]['jd']['mean']:.3f} / {by[k]['f1_midi']['mean']:.2f}"  # noqa: E731
                        if k in by and "jd" in by[k] and "f1_midi" in by[k] else "–")
        op = res["operating_points"]["timbre"]
        out.append(f"| {res.get('target')} | {held_name(res)} | τ {op.get('t_init')}, λ {op.get('lam')} | {x('warm')} | "
                   f"{x('ddib')} | {x('generation')} | {jf('warm')} | {jf('ddib')} | {t:.2f} |")
    return out


def tables(root: Path) -> list[str]:
    out = []
    for res, by in results(root):
        target_fad = by.get("target", {}).get("fad", {}).get("mean")
        op = res["operating_points"]["timbre"]
        out.append(f"#### {held_name(res)} → {res.get('target')} (τ_init {op.get('t_init')}, λ {op.get('lam')}; "
                   f"{res['inputs_per_task']['timbre']['inputs']} guides)\n")
        out.append("| method | FAD (same-repertoire real) | × true target | JD vs guide | F1 vs MIDI |")
        out.append("|---|---|---|---|---|")
        for key in sorted(by, key=lambda k: ORDER.index(k.split("-")[0]) if k.split("-")[0] in ORDER else 99):
            m = by[key]
            ratio = (f"{m['fad']['mean'] / target_fad:.2f}" if target_fad and "fad" in m else "–")
            out.append(f"| {m['label']} | {fmt(m.get('fad'), 2)} | {ratio} | {fmt(m.get('jd'), 3)} | {fmt(m.get('f1_midi'), 3)} |")
        out.append("")
    return out


if __name__ == "__main__":
    root = Path(sys.argv[1])
    print("\n".join(overview(root) + [""] + tables(root)))
