"""--t-init auto end to end on the session's tiny models: the instrument probe fitted on the tiny
corpus tells its instruments apart; auto gives a guide that already is the target instrument a
larger tau_init than one that is not; each auto output is the fixed-tau_init run at its chosen
tau_init, bit for bit; the outputs table says which tau_init was chosen and why."""
from __future__ import annotations

import pytest

from infra.datasets import ShardedDataset
from schemas.diffusion import SamplerConfig, WarmStartConfig, WindowConfig
from schemas.probe import AutoStart, ProbeConfig
from schemas.transform import InputSelection, TransformConfig, TransformLogistics

pytestmark = pytest.mark.integration
MODEL = "models:/reinstrument-instruments@champion"
SMALL = dict(window=WindowConfig(window_frames=64, overlap_frames=16), vocoder_iters=4, sampler=SamplerConfig(steps=6),
             target="flute", warm=WarmStartConfig(t_init=0.6, lam=0.0))


def _rows(res):
    return ShardedDataset.at(res["outputs_url"], "outputs").read(
        ["clip_id", "t_init", "t_init_rule", "p_target", "sigma_start", "sha256"]).to_pylist()


def test_probe_separates_instruments_and_auto_keeps_a_target_guide_faithful(models, tmp_path):
    from jobs.probe import train_probe_job
    from jobs.transform import transform_job

    corpus = models
    card = train_probe_job(corpus.clips_url, str(tmp_path / "probe"), ProbeConfig(crop_frames=64),
                           heldout=(corpus.clips_url,))
    assert card.labels == ("flute", "violin")
    scored = [r for r in card.accuracy if r.collection != "corpus (valid+test)"]
    assert {r.instrument for r in scored} == {"flute", "violin"}
    assert all(r.accuracy >= 0.9 for r in scored), scored  # whole clips of every split

    auto = AutoStart(probe=str(tmp_path / "probe" / "probe.pt"), candidates=(0.9, 0.7, 0.5, 0.3, 0.1))
    log = TransformLogistics(num_actors=0, out_url=str(tmp_path / "out"))
    chosen = {}
    for guide in ("flute", "violin"):
        res = transform_job(corpus.clips_url, InputSelection(domain=guide, limit=3),
                            TransformConfig(model=MODEL, auto=auto, **SMALL), log)
        rows = _rows(res)
        assert len(rows) == 3 and {r["t_init_rule"] for r in rows} == {"auto"}
        assert all(r["t_init"] in auto.candidates and 0 <= r["p_target"] <= 1 for r in rows)
        chosen[guide] = rows
    mean = {g: sum(r["t_init"] for r in rows) / len(rows) for g, rows in chosen.items()}
    assert mean["flute"] > mean["violin"], chosen  # a flute guide is already flute: it keeps more of itself
    assert all(r["t_init"] == max(auto.candidates) for r in chosen["flute"])

    # an auto output is the fixed-tau_init run at its chosen tau_init, bit for bit
    r = min(chosen["violin"], key=lambda r: r["t_init"])
    fixed = transform_job(corpus.clips_url, InputSelection(domain="violin", limit=3),
                          TransformConfig(model=MODEL, **{**SMALL, "warm": WarmStartConfig(t_init=r["t_init"], lam=0.0)}), log)
    same = {f["clip_id"]: f for f in _rows(fixed)}[r["clip_id"]]
    assert (same["sha256"], same["sigma_start"], same["t_init_rule"]) == (r["sha256"], r["sigma_start"], "given")
    again = transform_job(corpus.clips_url, InputSelection(domain="violin", limit=3),
                          TransformConfig(model=MODEL, auto=auto, **SMALL), log)
    assert again["transformed"] == 0  # a re-run finds every auto output done
