"""`compare` end to end on tiny models (flute, violin, violin->flute conditional, the tiny
vocoder; trained by tests/integration/test_transform.py's fixture): every method's rows for all
three tasks, per degradation kind for enhancement, inputs held out by piece, the plot and page;
and the nightly job applying exactly the operating point the sweep and the comparison report."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from infra.datasets import ShardBuffer, ShardedDataset
from schemas.diffusion import SamplerConfig, WindowConfig
from schemas.transform import InputSelection, TransformLogistics

pytestmark = pytest.mark.integration
FLUTE = "models:/reinstrument-flute@champion"
SMALL = dict(window=WindowConfig(window_frames=64, overlap_frames=16), vocoder_iters=4)


def _pieces_dataset(corpus_clips: str, url: str, n: int) -> set[str]:
    """A clips dataset holding every clip of the corpus's first `n` pieces (what a model 'trained on')."""
    table = ShardedDataset.at(corpus_clips, "clips").read()
    pieces = sorted({p for p in table.column("piece").to_pylist() if p})[:n]
    buf = ShardBuffer(ShardedDataset.at(url, "clips"), "test", 1000)
    for r in table.to_pylist():
        if r["piece"] in pieces:
            buf.add(r)
    buf.commit()
    return set(pieces)


def test_compare_every_method_every_task_then_nightly_applies_the_same_point(models, tmp_path):
    from jobs.compare import compare_job
    from jobs.nightly import nightly_job
    from schemas.nightly import NightlyConfig, NightlyTarget
    from jobs.sweep import sweep_job
    from schemas.compare import CompareConfig
    from schemas.sweep import SweepConfig
    from tasks.audio import decode_audio_bytes
    from tasks.metrics.sources import audio_items

    corpus = models
    out = str(tmp_path / "root")
    log = TransformLogistics(num_actors=0, out_url=out)
    sweep = sweep_job(corpus.clips_url, InputSelection(domain="violin", limit=2),
                      SweepConfig(model=FLUTE, t_inits=(0.6, 1.0), lams=(0.0,), sampler=SamplerConfig(steps=6),
                                  reference_split=None, reference_limit=4, **SMALL), log)
    op = sweep["operating_point"]
    seen = _pieces_dataset(corpus.clips_url, str(tmp_path / "seen"), 1)
    cfg = CompareConfig(model=FLUTE, source_models={"timbre": "models:/reinstrument-violin@champion"},
                        conditional_models={"timbre": "models:/reinstrument-cond-violin-to-flute@champion"},
                        split=None, limit=2, exclude_pieces_of=(str(tmp_path / "seen"),), reference_split=None,
                        reference_limit=4, neighbours=(-0.1,), listen=1, **SMALL)
    res = compare_job(corpus.clips_url, cfg, log)

    # warm init ran at the (timbre) sweep's operating point, applied whole; the other tasks had no
    # sweep of their own and say where theirs came from
    ops = res["operating_points"]
    assert ops["timbre"]["t_init"] == op["t_init"] and ops["timbre"]["lam"] == op["lam"]
    assert SamplerConfig.model_validate(ops["timbre"]["sampler"]) == SamplerConfig.model_validate(op["sampler"])
    assert ops["timbre"]["from"].startswith("the timbre sweep")
    assert ops["enhance"]["from"].startswith("a sweep of another task (no enhance sweep")
    rows = pq.read_table(res["table_url"]).to_pylist()
    keys = lambda task: {r["key"] for r in rows if r["task"] == task}  # noqa: E731
    neighbour = f"warm-t{round(op['t_init'] - 0.1, 6):g}"
    common = {"guide", "identity", "warm", "generation", "target"} | ({neighbour} if 0 < op["t_init"] - 0.1 < 1 else set())
    assert keys("timbre") == common | {"ddib", "conditional"}
    assert keys("midi2real") == keys("enhance") == common
    for task in ("timbre", "midi2real", "enhance"):
        for key in keys(task):
            got = {r["metric"] for r in rows if r["task"] == task and r["key"] == key and r["subset"] == "all"}
            assert {"fad", "jd", "jd_melody"} <= got, (task, key, got)
            if key not in ("guide", "target"):
                assert {"nfe", "s_per_audio_s"} <= got, (task, key, got)
    nfe = {(r["task"], r["key"]): r["mean"] for r in rows if r["metric"] == "nfe"}
    assert nfe[("timbre", "identity")] == 0 and nfe[("timbre", "generation")] == 11  # Heun 6 steps from sigma_max
    assert nfe[("timbre", "ddib")] == 2 * nfe[("timbre", "warm")] or op["sampler"]["S_churn"] > 0
    assert all(r["reference"] == "domain:flute" for r in rows if r["metric"] == "fad")
    # enhancement: against the clean clip, over all inputs and per degradation kind
    enh = [r for r in rows if r["task"] == "enhance" and r["metric"] == "si_sdr_db"]
    kinds = {r["subset"] for r in enh} - {"all"}
    assert kinds and kinds <= {"noise", "lowpass", "clipping", "reverb"}
    assert all(r["reference"] == "clean" for r in enh)
    assert sum(r["n"] for r in enh if r["key"] == "warm" and r["subset"] != "all") == \
        next(r["n"] for r in enh if r["key"] == "warm" and r["subset"] == "all")
    # held out by construction: no input of a piece the 'seen' dataset holds
    clips = {r["clip_id"]: r["piece"] for r in ShardedDataset.at(corpus.clips_url, "clips").read(["clip_id", "piece"]).to_pylist()}
    runs = {r["run_id"] for r in rows if r["key"] == "warm"}
    for run_id in runs:
        ids = ShardedDataset.at(f"{out}/runs/{run_id}/outputs", "outputs").read(["clip_id"]).column("clip_id").to_pylist()
        assert ids and not {clips[c] for c in ids} & seen
    assert all(v["inputs"] >= 2 for v in res["inputs_per_task"].values())
    # plot, page (every method's player for each listened input) and the README tables
    assert open(res["plot_url"].removeprefix("file://"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    page = open(res["report_url"].removeprefix("file://")).read()
    # one input per task: its guide, every transforming method's output and its true target
    assert page.count("<audio") == sum(1 + len(keys(t) - {"guide", "target"}) + 1 for t in ("timbre", "midi2real", "enhance"))
    assert all(f"| {m}" in res["markdown"]["timbre"] for m in ("identity", "DDIB", "conditional baseline", "plain generation"))
    again = compare_job(corpus.clips_url, cfg, log)  # the same comparison is found, not recomputed
    assert again["compare_id"] == res["compare_id"] and again["finished_at"] == res["finished_at"]

    # the nightly job, given no tau_init, applies the very point the sweep and the comparison report
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    item = next(iter(audio_items(corpus.clips_url, domain="violin", role="clean", limit=1)))
    import soundfile as sf

    sf.write(inbox / "new.wav", item.audio, item.sample_rate_hz)
    night = nightly_job(NightlyConfig(inputs=str(inbox), targets=(NightlyTarget(model=FLUTE),), out=out, actors=0))
    (run,) = night["runs"]
    (row,) = ShardedDataset.at(run["outputs"], "outputs").read().to_pylist()
    sampler = SamplerConfig.model_validate(ops["timbre"]["sampler"])
    assert (row["t_init"], row["lam"], row["steps"]) == (ops["timbre"]["t_init"], ops["timbre"]["lam"], sampler.steps)
    assert row["sampler"] == sampler.name and run["point"].endswith(f"{sampler.name} {sampler.steps}")  # no churn
    assert decode_audio_bytes(open(row["output_uri"].removeprefix("file://"), "rb").read())[0].size > 0
