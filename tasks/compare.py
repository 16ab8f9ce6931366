"""The methods a comparison runs (issue 20) and the summaries of its rows, as plain functions.

Every method of a task sees the same inputs and, where it transforms, the same target model,
seed, windows and decoder. Two rows per task transform nothing and bound the others: the guide
itself, as played (for enhancement: the degraded input), and the true target where the corpus
knows it (for enhancement: the clean reference)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from schemas.probe import AutoStart
from schemas.diffusion import EDMConfig, SamplerConfig, WarmStartConfig
from schemas.transform import TransformConfig
from tasks.diffusion.samplers import model_evaluations
from tasks.diffusion.warm import warm_sigmas

GUIDE_ROLES = {"timbre": "clean", "midi2real": "midi_guide", "enhance": "degraded"}
GUIDE_LABEL = {"timbre": "guide (input, as played)", "midi2real": "MIDI guide (input, as played)",
               "enhance": "degraded input"}
TARGET_LABEL = {"timbre": "true target (real, same segment)", "midi2real": "true target (real, same segment)",
                "enhance": "clean reference"}


@dataclass(frozen=True)
class Method:
    """One row family of a task's table. kind 'transform' runs `config`; 'guide' and 'target'
    score the inputs and their true targets as they are."""
    key: str                         # stable slug: guide, identity, warm, warm-t0.6, ddib, conditional, generation, target
    label: str                       # what the table and the page show
    kind: Literal["transform", "guide", "target"]
    config: TransformConfig | None = None


def _warm_label(t_init: float, lam: float, sampler: SamplerConfig) -> str:
    churn = f", S_churn {sampler.S_churn:g}" if sampler.S_churn else ""
    return f"τ {t_init:g}, λ {lam:g} ({sampler.name} {sampler.steps}{churn})"


def plan_methods(task: str, base: TransformConfig, point: WarmStartConfig, neighbours: tuple[float, ...], *,
                 source_model: str | None = None, conditional_model: str | None = None,
                 source_label: str | None = None, auto: AutoStart | None = None) -> list[Method]:
    """The methods of one task, in table order. `base` carries the target model (and instrument),
    sampler, window, seed and decoder; `point` is the operating point (tau_init and lambda);
    `source_label` is the guides' instrument, DDIB's source label when its model learned several."""
    if point.t_init is None:
        raise ValueError("the comparison's operating point is a tau_init; a sigma_start point has no tau neighbours")
    t, lam, s = point.t_init, point.lam, base.sampler
    warm = lambda t_init, la: base.model_copy(update={"warm": WarmStartConfig(t_init=t_init, lam=la)})  # noqa: E731
    out = [Method("guide", GUIDE_LABEL[task], "guide"),
           Method("identity", "identity (guide through the decoder, τ 1)", "transform", warm(1.0, 0.0)),
           Method("warm", f"warm init at the operating point: {_warm_label(t, lam, s)}", "transform", warm(t, lam))]
    if auto is not None:  # tau_init per clip (tasks/auto_t_init.py), with the operating point's lambda and sampler
        out.append(Method("warm-auto", f"warm init, τ_init auto per clip (λ {lam:g}, {s.name} {s.solver_steps or s.steps})",
                          "transform", base.model_copy(update={"warm": WarmStartConfig(t_init=t, lam=lam), "auto": auto})))
    for d in neighbours:
        tn = round(t + d, 6)
        if 0 < tn < 1 and tn != t:
            out.append(Method(f"warm-t{tn:g}", f"warm init, neighbour: {_warm_label(tn, lam, s)}", "transform", warm(tn, lam)))
    if source_model:
        ddib_sampler = s.model_copy(update={"S_churn": 0.0, "name": s.name if s.name in ("euler", "heun") else "heun"})
        out.append(Method("ddib", f"DDIB (source ODE up to τ {t:g}, target down; {ddib_sampler.name} {ddib_sampler.steps})",
                          "transform", base.model_copy(update={"method": "ddib", "source_model": source_model,
                                                               "source": source_label,
                                                               "warm": WarmStartConfig(t_init=t, lam=0.0),
                                                               "sampler": ddib_sampler})))
    if conditional_model:
        out.append(Method("conditional", f"conditional baseline (DiffTransfer-style, {s.name} {s.steps}, from noise)",
                          "transform", base.model_copy(update={"method": "conditional", "model": conditional_model,
                                                               "guidance": 1.0,
                                                               "warm": WarmStartConfig(t_init=0.0, lam=1.0)})))
    out.append(Method("generation", "plain generation (τ 0, λ 1: ignores the guide)", "transform", warm(0.0, 1.0)))
    out.append(Method("target", TARGET_LABEL[task], "target"))
    return out


def evaluations_per_window(cfg: TransformConfig, edm: EDMConfig) -> int:
    """Denoiser calls per window of one transform: the sampler's on the warm grid; DDIB runs the
    ODE twice (source up, target down); the conditional baseline runs the full grid from noise."""
    if cfg.method == "conditional":
        return model_evaluations(cfg.sampler.name, warm_sigmas(cfg.sampler, edm))
    n = model_evaluations(cfg.sampler.name, warm_sigmas(cfg.sampler, edm, cfg.warm))
    return 2 * n if cfg.method == "ddib" else n


def degradation_kind(degradation: str | None) -> str | None:
    """The kind named by a degraded clip's `degradation` JSON (noise, lowpass, clipping, reverb)."""
    return json.loads(degradation).get("kind") if degradation else None


def summary_rows(rows: list[dict], metrics: tuple[str, ...]) -> list[dict]:
    """Per (task, subset, method): one dict with `mean [lo, hi]` per metric, in the rows' order."""
    table: dict[tuple, dict] = {}
    for r in rows:
        key = (r["task"], r["subset"], r["label"])
        entry = table.setdefault(key, {"task": r["task"], "subset": r["subset"], "method": r["label"]})
        if r["metric"] in metrics:
            ci = (f" [{r['ci_low']:.3g}, {r['ci_high']:.3g}]" if r["ci_low"] is not None and r["ci_high"] is not None
                  and r["ci_low"] != r["ci_high"] else "")
            entry[r["metric"]] = f"{r['mean']:.3g}{ci}"
    return [{"task": e["task"], "subset": e["subset"], "method": e["method"], **{m: e.get(m, "") for m in metrics}}
            for e in table.values()]


def markdown(summary: list[dict], task: str, subset: str = "all") -> str:
    """One task's table as Markdown (README), columns as in `summary`."""
    rows = [r for r in summary if r["task"] == task and r["subset"] == subset]
    if not rows:
        return ""
    cols = [c for c in rows[0] if c not in ("task", "subset") and any(r[c] for r in rows)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def scatter_points(rows: list[dict]) -> dict[str, list[tuple[str, float, float, float, float, float, float]]]:
    """Per task (subset 'all'): (method, JD, JD low, JD high, FAD, FAD low, FAD high) for every
    method with both."""
    by: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        if r["subset"] == "all" and r["metric"] in ("jd", "fad"):
            by.setdefault((r["task"], r["label"]), {})[r["metric"]] = r
    out: dict[str, list] = {}
    for (task, label), m in by.items():
        if {"jd", "fad"} <= set(m):
            j, f = m["jd"], m["fad"]
            out.setdefault(task, []).append((label, j["mean"], j["ci_low"], j["ci_high"], f["mean"], f["ci_low"],
                                             f["ci_high"]))
    return out


def true_target_ids(guides: list[dict], clips: list[dict], target_domain: str) -> dict[str, str]:
    """Guide clip ID -> its true target's clip ID: the clean clip a guide stands for (`clean_id`),
    else the target domain's clean render of the same segment (`source_id`). Guides without one
    (an ingested recording) are left out."""
    by_id = {c["clip_id"]: c for c in clips}
    same_segment: dict[str, dict] = {}
    for c in sorted(clips, key=lambda c: c["clip_id"]):  # several soundfonts: the first by clip ID
        if c["role"] == "clean" and c["domain"] == target_domain:
            same_segment.setdefault(c["source_id"], c)
    out = {}
    for r in guides:
        t = by_id.get(r.get("clean_id") or "") or same_segment.get(r["source_id"])
        if t is not None and t["domain"] == target_domain and t["clip_id"] != r["clip_id"]:
            out[r["clip_id"]] = t["clip_id"]
    return out

