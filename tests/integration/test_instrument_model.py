"""A model of several instruments end to end on tiny models: `--target` picks the instrument in
transform, sweep (one operating point per instrument), compare (DDIB from the same model, the
guide's instrument as its source label) and the nightly job; without a target it says which
instruments it knows."""
from __future__ import annotations

import json

import pytest

from infra.datasets import ShardedDataset
from schemas.diffusion import SamplerConfig, WindowConfig
from schemas.transform import InputSelection, TransformConfig, TransformLogistics

pytestmark = pytest.mark.integration
MODEL = "models:/reinstrument-instruments@champion"
COND = "models:/reinstrument-cond-any-to-instruments@champion"  # conditioned on another instrument's segment
SMALL = dict(window=WindowConfig(window_frames=64, overlap_frames=16), vocoder_iters=4)


def test_target_picks_the_instrument_everywhere(models, tmp_path):
    from jobs.compare import compare_job
    from jobs.nightly import resolve_targets
    from schemas.nightly import NightlyTarget
    from jobs.operating_point import newest_operating_point
    from jobs.sweep import sweep_job
    from jobs.transform import transform_job
    from infra.storage import Storage
    from schemas.compare import CompareConfig
    from schemas.sweep import SweepConfig

    corpus = models
    out = str(tmp_path / "root")
    log = TransformLogistics(num_actors=0, out_url=out)
    sel = InputSelection(domain="violin", limit=2)
    with pytest.raises(ValueError, match=r"learned several instruments \['flute', 'violin'\]: name the target"):
        transform_job(corpus.clips_url, sel, TransformConfig(model=MODEL, **SMALL), log)
    with pytest.raises(ValueError, match="has no instrument 'cello'"):
        transform_job(corpus.clips_url, sel, TransformConfig(model=MODEL, target="cello", **SMALL), log)

    res = transform_job(corpus.clips_url, sel, TransformConfig(model=MODEL, target="flute", guidance=1.5,
                                                               sampler=SamplerConfig(steps=6), **SMALL), log)
    rows = ShardedDataset.at(res["outputs_url"], "outputs").read(["target_domain", "input_domain"]).to_pylist()
    assert len(rows) == 2 and {r["target_domain"] for r in rows} == {"flute"}

    for target in ("flute", "violin"):
        sweep_job(corpus.clips_url, InputSelection(domain="flute" if target == "violin" else "violin", limit=2),
                  SweepConfig(model=MODEL, target=target, t_inits=(0.6 if target == "flute" else 0.7, 1.0), lams=(0.0,),
                              sampler=SamplerConfig(steps=6), reference_split=None, reference_limit=4, **SMALL), log)
    recs = [json.loads(Storage(out).read_bytes(r)) for r in Storage(out).find("sweeps") if r.endswith("recommendation.json")]
    assert sorted(r["target"] for r in recs) == ["flute", "violin"]  # one operating point per instrument
    version = recs[0]["model_version"]
    points = {t: newest_operating_point(Storage(out), version, "timbre", t) for t in ("flute", "violin", None)}
    assert points[None] is None  # a model of several instruments has no instrument-less point
    assert points["flute"].t_init in (0.6, 1.0) and points["violin"].t_init in (0.7, 1.0)  # each from its own grid

    nightly = resolve_targets((NightlyTarget(model=MODEL, target="violin"),), Storage(out))
    assert nightly[0]["target"] == "violin" and nightly[0]["warm"]["t_init"] == points["violin"].t_init

    cmp = compare_job(corpus.clips_url, CompareConfig(model=MODEL, target="flute", tasks=("timbre",),
                                                      source_models={"timbre": MODEL}, split=None, limit=2,
                                                      conditional_models={"timbre": COND},
                                                      reference_split=None, reference_limit=4, neighbours=(),
                                                      listen=1, **SMALL), log)
    methods = " | ".join(r["method"] for r in cmp["summary"])
    assert cmp["operating_points"]["timbre"]["t_init"] == points["flute"].t_init and cmp["target"] == "flute"
    for name in ("DDIB", "conditional baseline", "plain generation", "warm init at the operating point"):
        assert name in methods, methods
