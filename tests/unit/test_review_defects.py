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


@pytest.mark.parametrize("sampler", [SamplerConfig(name="dpmpp_2m"), SamplerConfig(name="heun", churn=7.0)])
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


def test_nightly_keeps_an_explicit_tau_init_of_zero(tmp_path):
    from flows.nightly import resolve_targets

    root = Storage(str(tmp_path))
    rec = {"model_version": "reinstrument-flute/3", "finished_at": "2026-11-30T00:00:00",
           "recommended": {"1": {"t_init": 0.65, "jd": 0.1, "fad": 3.0, "rule": "knee"}}}
    root.write_bytes("sweeps/sw-1/recommendation.json", json.dumps(rec).encode())
    got = resolve_targets([{"model": "models:/reinstrument-flute/3", "t_init": 0.0},
                           {"model": "models:/reinstrument-flute/3"},
                           {"model": "models:/reinstrument-violin/1"}], root, steps=12)
    assert [t["t_init"] for t in got] == [0.0, 0.65, 0.5]
    assert [t["version"] for t in got] == ["reinstrument-flute/3", "reinstrument-flute/3", "reinstrument-violin/1"]
    assert {t["model"] for t in got[:2]} == {"models:/reinstrument-flute/3"} and {t["steps"] for t in got} == {12}


def test_summarise_pairs_each_grid_points_jd_with_its_fad_per_lambda():
    from flows.sweep import summarise

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
    assert recs["0"]["t_init"] == 0.5 and (recs["0"]["jd"], recs["0"]["fad"]) == (0.3, 9.0)
    assert recs["1"]["t_init"] == 0.8


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
