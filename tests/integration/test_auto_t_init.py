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


def test_auto_in_sweep_compare_and_nightly_with_target_accuracy(models, tmp_path):
    """A sweep scores auto beside its curve (never in it), compare adds an auto row and names each
    input's chosen tau_init on its page, the nightly job applies auto to a target; every table
    reports the share of outputs the probe hears as the target."""
    import pyarrow.parquet as pq
    import soundfile as sf

    from jobs.compare import compare_job
    from jobs.nightly import nightly_job
    from jobs.probe import train_probe_job
    from jobs.sweep import sweep_job
    from schemas.compare import CompareConfig
    from schemas.nightly import NightlyConfig, NightlyTarget
    from schemas.sweep import SweepConfig
    from tasks.metrics.sources import audio_items

    corpus = models
    train_probe_job(corpus.clips_url, str(tmp_path / "probe"), ProbeConfig(crop_frames=64))
    auto = AutoStart(probe=str(tmp_path / "probe" / "probe.pt"), candidates=(0.9, 0.6, 0.3))
    out = str(tmp_path / "root")
    log = TransformLogistics(num_actors=0, out_url=out)
    small = {k: v for k, v in SMALL.items() if k != "warm"}
    sweep = sweep_job(corpus.clips_url, InputSelection(domain="violin", limit=2),
                      SweepConfig(model=MODEL, t_inits=(0.6, 1.0), lams=(0.0,), reference_split=None, reference_limit=4,
                                  anchors=False, auto=auto, **small), log)
    rows = sweep["rows"]
    auto_rows = {r["metric"]: r for r in rows if r["method"] == "auto"}
    assert {"fad", "jd", "target_accuracy"} <= set(auto_rows)
    assert auto_rows["fad"]["t_init"] in auto.candidates or 0.3 <= auto_rows["fad"]["t_init"] <= 0.9  # mean chosen
    assert {r["metric"] for r in rows if r["method"] == "warm_init"} >= {"fad", "jd", "target_accuracy"}
    assert sweep["operating_point"]["t_init"] in (0.6, 1.0)  # the knee of the fixed curve alone

    cmp = compare_job(corpus.clips_url, CompareConfig(model=MODEL, tasks=("timbre",), split=None, limit=2,
                                                      reference_split=None, reference_limit=4, neighbours=(), listen=1,
                                                      auto=auto, t_init=0.6, lam=0.0, **small), log)
    table = pq.read_table(cmp["table_url"]).to_pylist()
    assert {"warm", "warm-auto"} <= {r["key"] for r in table}
    assert any(r["key"] == "warm-auto" and r["metric"] == "target_accuracy" for r in table)
    assert "τ_init auto chose" in open(cmp["report_url"].removeprefix("file://")).read()

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    item = next(iter(audio_items(corpus.clips_url, domain="violin", role="clean", limit=1)))
    sf.write(inbox / "new.wav", item.audio, item.sample_rate_hz)
    night = nightly_job(NightlyConfig(inputs=str(inbox), out=out, actors=0,
                                      targets=(NightlyTarget(model=MODEL, target="flute", t_init="auto"),)))
    (run,) = night["runs"]
    rows = ShardedDataset.at(run["outputs"], "outputs").read(["t_init_rule", "t_init"]).to_pylist()
    assert {r["t_init_rule"] for r in rows} == {"auto"} and all(r["t_init"] in AutoStart().candidates for r in rows)
    (rec,) = ShardedDataset.at(run["run"] + "/recording_rows", "recordings").read(["t_init"]).to_pylist()
    assert rec["t_init"] == pytest.approx(sum(r["t_init"] for r in rows) / len(rows), abs=1e-4)  # its clips' mean
    import glob

    (page,) = glob.glob(f"{out}/nightly/*/report/report.html")
    assert "(this recording: τ " in open(page).read()  # each recording's own tau_init on the night's page
