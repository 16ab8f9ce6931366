"""Defects found in review (issue 17), each pinned by a test that failed before its fix."""
from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from infra.storage import Storage
from schemas.diffusion import SamplerConfig, WarmStartConfig
from schemas.sweep import SweepConfig
from schemas.transform import TransformConfig

DDIB = dict(method="ddib", model="models:/reinstrument-flute/1", source_model="models:/reinstrument-violin/1",
            warm=WarmStartConfig(t_init=0.5))


@pytest.mark.parametrize("sampler", [SamplerConfig(name="dpmpp_2m"), SamplerConfig(name="heun", S_churn=7.0)])
def test_ddib_refuses_a_sampler_it_cannot_run(sampler):
    """It used to run Euler (no churn) while the outputs table recorded the configured sampler."""
    with pytest.raises(ValidationError, match="ddib runs the deterministic ODE"):
        TransformConfig(**DDIB, sampler=sampler)
    with pytest.raises(ValidationError, match="ddib runs the deterministic ODE"):
        SweepConfig(model=DDIB["model"], method="ddib", source_model=DDIB["source_model"], sampler=sampler,
                    t_inits=(0.5,))


@pytest.mark.parametrize("name", ["euler", "heun"])
def test_ddib_accepts_the_deterministic_samplers(name):
    assert TransformConfig(**DDIB, sampler=SamplerConfig(name=name)).sampler.name == name


def test_nightly_applies_the_recommended_operating_point_whole_and_keeps_an_explicit_zero(tmp_path):
    """It used to turn an explicit t_init 0.0 into the recommendation (`or`), and to apply only
    lambda 1's tau_init, dropping the lambda and sampler (churn) the sweep recommended."""
    from jobs.nightly import resolve_targets
    from schemas.nightly import NightlyTarget

    root = Storage(str(tmp_path))
    sampler = SamplerConfig(steps=35, S_churn=7.0, S_tmin=0.5).model_dump(mode="json")
    rec = {"sweep_id": "sw-1", "model_version": "reinstrument-flute/3", "finished_at": "2026-11-30T00:00:00",
           "metrics_url": "m", "plot_url": "p", "report_url": "r", "mlflow_run_id": "x", "points": 3,
           "recommended": {"0": {"t_init": 0.65, "jd": 0.1, "fad": 3.0, "rule": "knee"}},
           "operating_point": {"t_init": 0.65, "lam": 0.0, "jd": 0.1, "fad": 3.0, "rule": "knee", "sampler": sampler}}
    root.write_bytes("sweeps/sw-1/recommendation.json", json.dumps(rec).encode())
    # an older sweep's file, written before the sampler settings took EDM's names, still loads
    old_names = {"name": "heun", "steps": 35, "rho": 7.0, "churn": 7.0, "churn_sigma_min": 0.5, "churn_noise": 1.0}
    older = dict(rec, finished_at="2026-11-01T00:00:00",
                 operating_point=dict(rec["operating_point"], t_init=0.9, sampler=old_names))
    root.write_bytes("sweeps/sw-0/recommendation.json", json.dumps(older).encode())
    got = resolve_targets((NightlyTarget(model="models:/reinstrument-flute/3", t_init=0.0),
                           NightlyTarget(model="models:/reinstrument-flute/3"),
                           NightlyTarget(model="models:/reinstrument-violin/1")), root)
    assert got[0]["warm"] == {"t_init": 0.0, "lam": 1.0} and got[0]["sampler"]["S_churn"] == 0
    assert got[1]["warm"] == {"t_init": 0.65, "lam": 0.0} and got[1]["sampler"] == sampler
    # no sweep for this version: the documented default (jobs/operating_point.DEFAULT_WARM), said so
    assert got[2]["warm"] == {"t_init": 0.6, "lam": 0.0} and got[2]["sampler"]["steps"] == 35
    assert got[1]["origin"].startswith("sweep sw-1") and got[2]["origin"].startswith("the default")
    assert [t["version"] for t in got] == ["reinstrument-flute/3", "reinstrument-flute/3", "reinstrument-violin/1"]
    assert resolve_targets((NightlyTarget(model="models:/reinstrument-flute/3"),), root, steps=12)[0]["sampler"]["steps"] == 12


def test_the_sweeps_operating_point_is_the_knee_over_every_lambda():
    from jobs.sweep import operating_point

    cfg = SweepConfig(model="models:/m/1", t_inits=(0.2, 0.5, 0.8), lams=(0.0, 1.0),
                      sampler=SamplerConfig(S_churn=7.0, S_tmin=0.5))
    curves = {"0": [(0.2, 0.8, 5.0), (0.5, 0.3, 9.0), (0.8, 0.1, 30.0)],
              "1": [(0.2, 0.9, 4.0), (0.5, 0.85, 15.0), (0.8, 0.2, 5.0)]}
    op = operating_point(cfg, curves)
    assert (op.t_init, op.lam) == (0.8, 1.0) and op.sampler.S_churn == 7.0 and op.sampler.S_tmin == 0.5
    assert operating_point(cfg, {}) is None


def test_summarise_pairs_each_grid_points_jd_with_its_fad_per_lambda():
    from jobs.sweep import summarise

    cfg = SweepConfig(model="models:/m/1", t_inits=(0.2, 0.5, 0.8), lams=(0.0, 1.0))
    rows = []
    for lam, pts in ((0.0, [(0.2, 0.8, 5.0), (0.5, 0.3, 9.0), (0.8, 0.1, 30.0)]),
                     (1.0, [(0.2, 0.9, 4.0), (0.5, 0.85, 15.0), (0.8, 0.2, 5.0)])):
        for t, jd, fad in pts:
            rows += [{"lam": lam, "t_init": t, "metric": "jd", "mean": jd},
                     {"lam": lam, "t_init": t, "metric": "fad", "mean": fad},
                     {"lam": lam, "t_init": t, "metric": "f1_midi", "mean": 0.5}]
    curves, recs = summarise(cfg, rows)
    assert curves == {"0": [(0.2, 0.8, 5.0), (0.5, 0.3, 9.0), (0.8, 0.1, 30.0)],
                      "1": [(0.2, 0.9, 4.0), (0.5, 0.85, 15.0), (0.8, 0.2, 5.0)]}
    assert recs["0"].t_init == 0.5 and (recs["0"].jd, recs["0"].fad) == (0.3, 9.0)
    assert recs["1"].t_init == 0.8


def test_resolve_model_pins_an_alias_once(tmp_path, monkeypatch):
    from infra import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    c = tracking.client()
    c.create_registered_model("reinstrument-flute")
    for _ in range(2):
        c.create_model_version("reinstrument-flute", source=str(tmp_path / "model"))
    c.set_registered_model_alias("reinstrument-flute", "champion", "2")
    assert tracking.resolve_model("models:/reinstrument-flute@champion") == ("models:/reinstrument-flute/2",
                                                                            "reinstrument-flute/2")
    assert tracking.resolve_model("models:/reinstrument-flute/1") == ("models:/reinstrument-flute/1",
                                                                     "reinstrument-flute/1")
    assert tracking.resolve_model("runs:/abc/model") == ("runs:/abc/model", "runs:/abc/model")
    with pytest.raises(ValueError, match="no model version 'reinstrument-flute' has alias 'nope'"):
        tracking.resolve_model("models:/reinstrument-flute@nope")
