"""The comparison's plan and summaries (tasks/compare.py) and its config's refusals."""
from __future__ import annotations

import pytest

from schemas.compare import CompareConfig
from schemas.diffusion import EDMConfig, SamplerConfig, WarmStartConfig
from schemas.transform import TransformConfig
from tasks.compare import evaluations_per_window, markdown, plan_methods, scatter_points, summary_rows

BASE = TransformConfig(model="models:/reinstrument-flute/1", sampler=SamplerConfig(name="heun", steps=20, S_churn=7))
POINT = WarmStartConfig(t_init=0.65, lam=0.0)


def test_plan_has_every_method_in_order_with_the_operating_point_applied_whole():
    methods = plan_methods("timbre", BASE, POINT, (-0.05, 0.05), source_model="models:/v/1", conditional_model="models:/c/1")
    assert [m.key for m in methods] == ["guide", "identity", "warm", "warm-t0.6", "warm-t0.7", "ddib", "conditional",
                                        "generation", "target"]
    by = {m.key: m for m in methods}
    assert by["warm"].config.warm == POINT and by["warm"].config.sampler == BASE.sampler
    assert by["identity"].config.warm == WarmStartConfig(t_init=1.0, lam=0.0)
    assert by["generation"].config.warm == WarmStartConfig(t_init=0.0, lam=1.0)
    assert by["warm-t0.6"].config.warm.lam == 0.0 and by["warm-t0.7"].config.warm.t_init == 0.7
    # DDIB runs the deterministic ODE both ways: the churn of the operating point is dropped
    assert by["ddib"].config.method == "ddib" and by["ddib"].config.sampler.S_churn == 0
    assert by["ddib"].config.source_model == "models:/v/1" and by["ddib"].config.warm.t_init == 0.65
    assert by["conditional"].config.model == "models:/c/1" and by["conditional"].config.method == "conditional"
    assert by["guide"].config is None and by["target"].kind == "target"


def test_plan_skips_baselines_without_models_and_neighbours_outside_the_range():
    methods = plan_methods("enhance", BASE, WarmStartConfig(t_init=0.97, lam=1.0), (-0.05, 0.05))
    keys = [m.key for m in methods]
    assert "ddib" not in keys and "conditional" not in keys and "warm-t0.92" in keys and "warm-t1.02" not in keys
    assert methods[0].label == "degraded input" and methods[-1].label == "clean reference"


def test_evaluations_per_window_count_the_denoiser_calls():
    edm = EDMConfig()
    heun = SamplerConfig(name="heun", steps=10)
    at = lambda t, **kw: BASE.model_copy(update={"sampler": heun, "warm": WarmStartConfig(t_init=t, lam=0.0), **kw})  # noqa: E731
    assert evaluations_per_window(at(0.0), edm) == 19        # 10 Heun steps, the last to 0 is Euler
    assert evaluations_per_window(at(0.5), edm) == 9         # 5 steps left
    assert evaluations_per_window(at(1.0), edm) == 0         # the guide itself
    assert evaluations_per_window(at(0.5, method="ddib", source_model="models:/v/1"), edm) == 18
    cond = at(0.5, method="conditional")                     # from noise on the full grid, whatever the warm start
    assert evaluations_per_window(cond, edm) == 19


def _row(task, label, metric, mean, lo=None, hi=None, subset="all"):
    return {"task": task, "label": label, "metric": metric, "mean": mean, "ci_low": lo, "ci_high": hi, "subset": subset}


def test_summary_markdown_and_scatter_points():
    rows = [_row("timbre", "warm", "fad", 5.21, 4.6, 5.9), _row("timbre", "warm", "jd", 0.058, 0.05, 0.07),
            _row("timbre", "identity", "fad", 21.4, 19.6, 23.3), _row("timbre", "identity", "jd", 0.039, 0.03, 0.05),
            _row("enhance", "warm", "fad", 3.0, 2.0, 4.0, subset="noise")]
    summary = summary_rows(rows, ("fad", "jd", "si_sdr_db"))
    assert summary[0] == {"task": "timbre", "subset": "all", "method": "warm", "fad": "5.21 [4.6, 5.9]",
                          "jd": "0.058 [0.05, 0.07]", "si_sdr_db": ""}
    md = markdown(summary, "timbre").splitlines()
    assert md[0] == "| method | fad | jd |" and md[2].startswith("| warm | 5.21 [4.6, 5.9]")
    assert markdown(summary, "midi2real") == ""
    pts = scatter_points(rows)
    assert set(pts) == {"timbre"} and pts["timbre"][0] == ("warm", 0.058, 0.05, 0.07, 5.21, 4.6, 5.9)


def test_config_refusals():
    with pytest.raises(ValueError, match="not compared"):
        CompareConfig(model="m", tasks=("timbre",), source_models={"enhance": "models:/x/1"})
    with pytest.raises(ValueError, match="give t_init too"):
        CompareConfig(model="m", lam=0.0)
    with pytest.raises(ValueError, match="twice"):
        CompareConfig(model="m", tasks=("timbre", "timbre"))
    with pytest.raises(ValueError, match="extra|not permitted"):
        CompareConfig(model="m", t_inits=(0.5,))


def test_split_all_means_every_split():
    assert CompareConfig(model="m", split="all").split is None and CompareConfig(model="m").split == "test"
