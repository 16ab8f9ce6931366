"""Corpus-scale transformation end to end: tiny models trained here and registered in MLflow,
local Ray with 2 actors, outputs in moto S3; an actor killed mid-run; a run SIGKILLed and
resumed; the three tasks and the three methods."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import boto3
import numpy as np
import pytest
import soundfile as sf

from infra.datasets import ShardedDataset
from ray_actors.features import extract_features
from schemas.configs import FeatureConfig
from schemas.diffusion import SamplerConfig, WarmStartConfig, WindowConfig
from schemas.nightly import NightlyConfig, NightlyTarget
from schemas.training import TRAIN_PRESETS, TrainConfig, TrainLogistics
from schemas.transform import InputSelection, TransformConfig, TransformLogistics
from tests.conftest import files_holding, sigkill_once_committed

pytestmark = pytest.mark.integration
HOP_S = 320 / 16000


def config(**over) -> TransformConfig:
    base = dict(model="models:/reinstrument-flute@champion", warm=WarmStartConfig(t_init=0.6, lam=1.0),
                sampler=SamplerConfig(steps=6), window=WindowConfig(window_frames=64, overlap_frames=16), vocoder_iters=4,
                vocoder="griffin-lim")
    return TransformConfig(**{**base, **over})


def s3_keys(bucket: str, prefix: str) -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


def check_run(result: dict, bucket: str, inputs: dict[str, float]) -> list[dict]:
    """Every output audible, of its input's duration (+-1 frame), table == objects one to one."""
    rows = ShardedDataset.at(result["outputs_url"], "outputs").read().to_pylist()
    keys = [r["output_key"] for r in rows]
    assert len(keys) == len(set(keys)) == len(inputs)
    run_prefix = result["run_url"].split(f"s3://{bucket}/", 1)[1]
    audio_keys = s3_keys(bucket, f"{run_prefix}/audio/")
    assert sorted(r["output_uri"].split(f"s3://{bucket}/", 1)[1] for r in rows) == audio_keys
    for r in rows:
        body = boto3.client("s3").get_object(Bucket=bucket, Key=r["output_uri"].split(f"s3://{bucket}/", 1)[1])["Body"].read()
        y, sr = sf.read(io.BytesIO(body), dtype="float32")
        assert sr == r["sample_rate_hz"] == 16000
        assert abs(len(y) / sr - inputs[r["clip_id"]]) <= HOP_S + 1e-9
        assert np.sqrt(np.mean(y ** 2)) > 1e-3, "silent output"
    return rows


@pytest.mark.parametrize("task,domain", [("timbre", "violin"), ("midi2real", None), ("enhance", "violin")])
def test_each_task_on_two_actors_into_s3(models, ray_local, s3_bucket, task, domain):
    from jobs.transform import transform_job

    corpus = models
    sel = InputSelection(domain=domain, limit=3)
    log = TransformLogistics(num_actors=2, clips_per_task=2, out_url=f"s3://{s3_bucket}/out")
    res = transform_job(corpus.clips_url, sel, config(task=task), log)
    assert res["transformed"] == 3 and res["failed"] == 0 and res["skipped"] == 0
    clips = ShardedDataset.at(corpus.clips_url, "clips").read(["clip_id", "duration_s"]).to_pylist()
    durations = {c["clip_id"]: c["duration_s"] for c in clips}
    rows = check_run(res, s3_bucket, {r: durations[r] for r in
                                      [x["clip_id"] for x in ShardedDataset.at(res["outputs_url"], "outputs").read(["clip_id"]).to_pylist()]})
    assert {r["task"] for r in rows} == {task} and {r["model"] for r in rows} == {"reinstrument-flute/1"}
    from infra import tracking
    c = tracking.client()
    run = c.get_run(res["mlflow_run_id"])
    assert run.data.params["model"] == "reinstrument-flute/1" and run.data.params["warm.t_init"] == "0.6"
    assert run.data.metrics["transformed"] == 3
    names = [a.path for a in c.list_artifacts(res["mlflow_run_id"])]
    assert "outputs.parquet" in names and len(c.list_artifacts(res["mlflow_run_id"], "audio_examples")) == 3
    again = transform_job(corpus.clips_url, sel, config(task=task), log)
    assert again["skipped"] == 3 and again["transformed"] == 0
    if task == "timbre":
        check_pull(res["run_url"], s3_bucket)


def check_pull(run_url: str, bucket: str) -> None:
    import hashlib
    import tempfile

    from typer.testing import CliRunner

    from cli import app

    dest = tempfile.mkdtemp()
    r = CliRunner().invoke(app, ["pull", run_url, "--out", dest])
    assert r.exit_code == 0 and "3 fetched" in r.output, r.output
    r = CliRunner().invoke(app, ["pull", run_url, "--out", dest])
    assert "0 fetched, 3 already present" in r.output
    sums = open(os.path.join(dest, "SHA256SUMS")).read().splitlines()
    for line in sums:
        digest, rel = line.split("  ")
        assert hashlib.sha256(open(os.path.join(dest, rel), "rb").read()).hexdigest() == digest
    assert os.path.isdir(os.path.join(dest, "outputs/_commits")) and os.path.exists(os.path.join(dest, "run.json"))
    # a corrupted object is refused, never written under its final name
    key = next(k for k in s3_keys(bucket, run_url.split(f"s3://{bucket}/", 1)[1] + "/audio/"))
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=b"corrupt")
    fresh = tempfile.mkdtemp()
    r = CliRunner().invoke(app, ["pull", run_url, "--out", fresh])
    assert r.exit_code == 1 and "ChecksumError" in r.output


def test_ddib_and_conditional_methods(models, s3_bucket):
    from jobs.transform import transform_job

    corpus = models
    log = TransformLogistics(num_actors=0, out_url=f"s3://{s3_bucket}/out")
    sel = InputSelection(domain="violin", limit=1)
    ddib = transform_job(corpus.clips_url, sel, config(method="ddib", source_model="models:/reinstrument-violin@champion"), log)
    cond = transform_job(corpus.clips_url, sel, config(method="conditional", model="models:/reinstrument-cond-violin-to-flute@champion"), log)
    assert ddib["transformed"] == cond["transformed"] == 1
    row = ShardedDataset.at(ddib["outputs_url"], "outputs").read().to_pylist()[0]
    assert row["method"] == "ddib" and row["source_model"] == "reinstrument-violin/1"


def test_an_undecodable_guide_is_quarantined_and_the_rest_transformed(models, tmp_path):
    from jobs.transform import transform_job
    from infra.datasets import ShardBuffer

    corpus = models
    rows = ShardedDataset.at(corpus.clips_url, "clips").read().to_pylist()
    rows = sorted((r for r in rows if r["domain"] == "violin" and r["role"] == "clean"), key=lambda r: r["clip_id"])[:3]
    rows[1]["audio_flac"] = rows[1]["audio_flac"][:40]  # truncated FLAC
    bad = ShardedDataset.at(str(tmp_path / "bad/clips"), "clips")
    buf = ShardBuffer(bad, "test", 10)
    for r in rows:
        buf.add(r)
    buf.commit()
    res = transform_job(bad.url, InputSelection(domain="violin"), config(),
                           TransformLogistics(num_actors=0, clips_per_task=3, out_url=str(tmp_path / "out")))
    assert res["transformed"] == 2 and res["failed"] == 1
    q = ShardedDataset.at(res["run_url"] + "/quarantine", "quarantine").read().to_pylist()
    assert len(q) == 1 and "undecodable guide audio" in q[0]["reason"] and q[0]["stage"] == "transform"
    out_rows = ShardedDataset.at(res["outputs_url"], "outputs").read().to_pylist()
    assert all(r["clean_id"] is None for r in out_rows)  # nulls stay null through Ray/numpy batches


def test_an_actor_killed_mid_run_loses_nothing(models, ray_local, s3_bucket, tmp_path, monkeypatch):
    from jobs.transform import transform_job

    marker = tmp_path / "crash-once"
    marker.write_text("the first actor call that finds this file kills its process")
    monkeypatch.setenv("REINSTRUMENT_FAULT_ONCE", str(marker))
    corpus = models
    log = TransformLogistics(num_actors=2, clips_per_task=1, out_url=f"s3://{s3_bucket}/out")
    res = transform_job(corpus.clips_url, InputSelection(domain="violin", limit=4), config(seed=7), log)
    assert not marker.exists(), "the fault was never injected"
    assert res["transformed"] == 4 and res["failed"] == 0
    clips = ShardedDataset.at(corpus.clips_url, "clips").read(["clip_id", "duration_s"]).to_pylist()
    rows = ShardedDataset.at(res["outputs_url"], "outputs").read(["clip_id"]).to_pylist()
    check_run(res, s3_bucket, {c["clip_id"]: c["duration_s"] for c in clips if c["clip_id"] in {r["clip_id"] for r in rows}})


def test_sigkill_then_rerun_finishes_without_recomputing(models, tmp_path):
    corpus = models
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cli", "transform", "--inputs", corpus.clips_url, "--model",
           "models:/reinstrument-flute@champion", "--domain", "violin", "--limit", "6", "--steps", "6",
           "--actors", "0", "--clips-per-task", "1", "--out", str(out), "--run-id", "killed", "--no-prefect"]
    env = dict(os.environ, REINSTRUMENT_PROGRESS="1")
    outputs = ShardedDataset.at(str(out / "runs/killed/outputs"), "outputs")
    committed = sigkill_once_committed(cmd, outputs.url, 2, 240, env=env)
    assert 2 <= committed < 6, f"kill landed after {committed} of 6 outputs"
    # Under a final name every object is whole (a write cut short leaves only a hidden .tmp- file).
    for p in (out / "runs/killed/audio").iterdir():
        if not p.name.startswith(".tmp-"):
            assert len(sf.read(p)[0]) > 0
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{committed} already transformed (skipped); {6 - committed} to do" in r.stderr + r.stdout
    rows = outputs.read(["output_key", "output_uri"]).to_pylist()
    assert len(rows) == len({x["output_key"] for x in rows}) == 6
    assert sorted(p.name for p in (out / "runs/killed/audio").iterdir() if not p.name.startswith(".tmp-")) == sorted(f"{x['output_key']}.flac" for x in rows)


def test_sweep_t_init_parent_and_child_runs_plot_and_recommendation(models, s3_bucket):
    from jobs.sweep import sweep_job
    from infra import tracking
    from schemas.sweep import SweepConfig

    corpus = models
    cfg = SweepConfig(model="models:/reinstrument-flute@champion", t_inits=(0.3, 0.6, 1.0), lams=(1.0,),
                      sampler=SamplerConfig(steps=6), window=WindowConfig(window_frames=64, overlap_frames=16),
                      vocoder_iters=4, reference_split=None, reference_limit=4)
    log = TransformLogistics(num_actors=0, out_url=f"s3://{s3_bucket}/root")
    res = sweep_job(corpus.clips_url, InputSelection(domain="violin", limit=2), cfg, log)
    # `auto` decoded every point with the registered champion vocoder, pinned once for the sweep
    rec = json.loads(boto3.client("s3").get_object(
        Bucket=s3_bucket, Key=f"root/sweeps/{res['sweep_id']}/recommendation.json")["Body"].read())
    assert rec["vocoder"] == "models:/reinstrument-vocoder/1"
    assert all(r["reference"] == "domain:flute" for r in res["rows"] if r["metric"] == "fad")  # real clips
    metrics = {(r["t_init"], r["metric"]) for r in res["rows"]}
    for t in (0.3, 0.6, 1.0):
        assert {(t, "fad"), (t, "jd"), (t, "jd_melody"), (t, "f1_midi")} <= metrics
    from tasks.tradeoff import Point, recommend

    by = {(r["t_init"], r["metric"]): r["mean"] for r in res["rows"]}
    expected = recommend([Point(t, by[(t, "jd")], by[(t, "fad")]) for t in (0.3, 0.6, 1.0)])
    assert res["recommended"]["1"]["t_init"] == expected.t_init
    assert (res["recommended"]["1"]["jd"], res["recommended"]["1"]["fad"]) == (expected.jd, expected.fad)
    keys = s3_keys(s3_bucket, f"root/sweeps/{res['sweep_id']}/")
    assert {k.rsplit("/", 1)[1] for k in keys} >= {"metrics.parquet", "tradeoff.png", "recommendation.json", "report.html"}
    page = boto3.client("s3").get_object(Bucket=s3_bucket, Key=f"root/sweeps/{res['sweep_id']}/report/report.html")["Body"].read().decode()
    srcs = re.findall(r'src="([^"]+)"', page)
    # per example: guide, 3 outputs and the operating point's Griffin-Lim decode, the flute render
    # of the same segment; a spectrogram panel each for the guide, the drawn outputs and the
    # target; the curves; the rating form over the examples (with their anchors, stored beside)
    panels = page.count('<figure class="spec">')
    assert page.count("<audio") == 2 * (1 + 4 + 1) and len(srcs) == 2 * (1 + 4 + 1) + panels + 1 and panels >= 2 * 3
    assert 'id="rating-form"' in page and sum(k.endswith("-anchor.flac") for k in keys) == 2
    assert f"root/sweeps/{res['sweep_id']}/report/report.json" in keys
    # the operating point decoded both ways, side by side in each example's players
    assert page.count("· Griffin-Lim</figcaption><audio") == 2 and page.count("· vocoder</figcaption><audio") == 2
    for src in srcs:  # every linked file exists next to the page
        assert f"root/sweeps/{res['sweep_id']}/report/{src}" in keys
    assert len(s3_keys(s3_bucket, "root/runs/")) >= 3 * 2  # each point's audio and table in S3
    c = tracking.client()
    children = c.search_runs([c.get_run(res["mlflow_run_id"]).info.experiment_id],
                             f"tags.mlflow.parentRunId = '{res['mlflow_run_id']}'")
    # the grid's 3 points and the plain-generation anchor (tau_init 0, lambda 1); the true target
    # (the flute render of each guide's segment) is scored without a transform
    assert len(children) == 4 and all("jd" in ch.data.metrics for ch in children)
    anchors = {(r["method"], r["metric"]) for r in res["rows"] if r["method"] != "warm_init"}
    assert {("generation", "fad"), ("generation", "jd"), ("target", "fad"), ("target", "jd")} <= anchors
    assert all(r["t_init"] == 0.0 and r["lam"] == 1.0 for r in res["rows"] if r["method"] == "generation")
    parent = c.get_run(res["mlflow_run_id"])
    assert "recommended_t_init_lam1" in parent.data.metrics
    assert {a.path for a in c.list_artifacts(res["mlflow_run_id"])} >= {"tradeoff.png", "recommendation.json", "metrics.parquet",
                                                                       "report"}


def test_sweep_for_enhancement_scores_against_the_clean_clip(models, tmp_path):
    from jobs.sweep import sweep_job
    from schemas.sweep import SweepConfig

    cfg = SweepConfig(task="enhance", model="models:/reinstrument-flute@champion", t_inits=(0.6,), lams=(1.0,),
                      sampler=SamplerConfig(steps=6), window=WindowConfig(window_frames=64, overlap_frames=16),
                      vocoder_iters=4, reference_split=None, reference_limit=3, vocoded_reference=False)
    res = sweep_job(models.clips_url, InputSelection(domain="flute", limit=2), cfg,
                TransformLogistics(num_actors=0, out_url=str(tmp_path)))
    by = {r["metric"]: r for r in res["rows"]}
    assert {"si_sdr_db", "lsd_db", "mel_l1_db", "fad", "jd"} <= set(by)
    assert by["si_sdr_db"]["reference"] == "clean" and by["si_sdr_db"]["n"] == 2
    assert by["fad"]["reference"] == "domain:flute"


def test_nightly_processes_only_new_arrivals_and_finishes_a_crashed_run(models, tmp_path, monkeypatch):
    import jobs.nightly as nightly_mod
    from tasks.metrics.sources import audio_items

    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    clips = list(audio_items(models.clips_url, domain="violin", role="clean", limit=3))
    for item in clips[:2]:
        sf.write(inbox / f"{item.item_id[:10]}.wav", item.audio, item.sample_rate_hz)
    targets = (NightlyTarget(model="models:/reinstrument-flute@champion", t_init=0.6),
               NightlyTarget(model="models:/reinstrument-violin@champion", t_init=0.6))

    def night(steps: int) -> NightlyConfig:
        return NightlyConfig(inputs=str(inbox), targets=targets, out=str(out), actors=0, steps=steps)
    first = nightly_mod.nightly_job(night(4), run_date="d1")
    assert [r["transformed"] for r in first["runs"]] == [2, 2]
    page = (out / "nightly/d1/report/report.html").read_text()  # each input: guide + one output per target
    # a panel per player (guide and each target's output); no true target, so no rating form
    assert page.count("<audio") == 2 * 3 and page.count("<img") == 2 * 3 and "reinstrument-violin/1" in page
    assert 'id="rating-form"' not in page
    # the night's decoder: the champion vocoder, pinned, named in the runs and on the page
    assert all(r["vocoder"] == "models:/reinstrument-vocoder/1" for r in first["runs"])
    assert "decoder models:/reinstrument-vocoder/1" in page
    assert all((out / "nightly/d1/report" / src).exists() for src in re.findall(r'src="([^"]+)"', page))
    # each arrival comes back whole, named after it, per target; the page is titled by the files
    names = sorted(f"{item.item_id[:10]}" for item in clips[:2])
    for model, target in (("reinstrument-flute", "flute"), ("reinstrument-violin", "violin")):
        whole = out / f"nightly/d1/runs/nightly-d1-{model}/recordings"
        assert sorted(p.name for p in whole.iterdir()) == [f"{n}.{target}.flac" for n in names]
        assert all(abs(sf.info(str(whole / f"{n}.{target}.flac")).duration - sf.info(str(inbox / f"{n}.wav")).duration)
                   <= HOP_S for n in names)
    assert all(f"{n}.wav (first 30 s)" in page for n in names)
    again = nightly_mod.nightly_job(night(4), run_date="d1b")
    assert again["runs"] == [] and again["new_commits"] == 0  # nothing new, nothing redone

    sf.write(inbox / f"{clips[2].item_id[:10]}.wav", clips[2].audio, clips[2].sample_rate_hz)
    real = nightly_mod.transform_job
    calls = []

    def crash_on_second_target(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash mid-run")
        return real(*a, **k)

    monkeypatch.setattr(nightly_mod, "transform_job", crash_on_second_target)
    with pytest.raises(RuntimeError, match="simulated crash"):
        nightly_mod.nightly_job(night(4), run_date="d2")
    monkeypatch.setattr(nightly_mod, "transform_job", real)
    # asked for other settings, the crashed night is still finished with its own (same output keys),
    # under its own date: flute's output was committed, violin's was not
    resumed = nightly_mod.nightly_job(night(6), run_date="d3")
    assert [(r["date"], r["transformed"], r["skipped"]) for r in resumed["runs"]] == [("d2", 0, 1), ("d2", 1, 0)]
    for model in ("reinstrument-flute", "reinstrument-violin"):
        ids = []
        for outputs in out.glob(f"nightly/*/runs/nightly-*-{model}/outputs"):
            ids += ShardedDataset.at(str(outputs), "outputs").read(["clip_id"]).column("clip_id").to_pylist()
        assert len(ids) == len(set(ids)) == 3, model  # every input exactly once per target


def _listening(pids: set[int]) -> set[str]:
    import psutil

    return {c.laddr.ip for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids}


def _our_tree() -> set[int]:
    import psutil

    me = psutil.Process()
    return {me.pid} | {p.pid for p in me.children(recursive=True)}


def test_every_service_listens_on_loopback_while_a_job_runs(models, ray_local, s3_bucket):
    """Issue 16, defect 3: while a transform runs on the local Ray (GCS, raylet, workers, agents)
    with moto S3 in this process, every socket this process tree listens on is loopback."""
    import threading

    from jobs.transform import transform_job

    seen: set[str] = set()
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            seen.update(_listening(_our_tree()))
            stop.wait(0.5)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        res = transform_job(models.clips_url, InputSelection(domain="violin", limit=2), config(seed=11),
                               TransformLogistics(num_actors=2, clips_per_task=1, out_url=f"s3://{s3_bucket}/lo"))
    finally:
        stop.set()
        t.join()
    assert res["transformed"] == 2
    assert len(seen) >= 1, "no listening socket was seen (the watcher is broken)"
    assert seen <= {"127.0.0.1", "::1", "::ffff:127.0.0.1"}, f"listening beyond loopback: {seen}"


SENTINEL_JOB = """
import json, os, sys
import ray
from infra.ray_cluster import ensure_ray
from infra.storage import Storage
from jobs.transform import transform_job
from schemas.diffusion import SamplerConfig, WarmStartConfig, WindowConfig
from schemas.nightly import NightlyConfig, NightlyTarget
from schemas.transform import InputSelection, TransformConfig, TransformLogistics
clips, bucket, key_id, secret, token, late = sys.argv[1:7]
sentinels = {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret, "MLFLOW_TRACKING_TOKEN": token}
if late == "late":   # Ray starts before any credential exists (a job without S3 ran first)
    for k in sentinels:
        os.environ.pop(k, None)
    ensure_ray()
os.environ.update(sentinels)
cfg = TransformConfig(model="models:/reinstrument-flute@champion", warm=WarmStartConfig(t_init=0.6, lam=1.0),
                      sampler=SamplerConfig(steps=6), window=WindowConfig(window_frames=64, overlap_frames=16),
                      vocoder_iters=4, seed=13)
res = transform_job(clips, InputSelection(domain="violin", limit=2), cfg,
                       TransformLogistics(num_actors=1, clips_per_task=1, out_url=f"s3://{bucket}/{late}"))
# A plain Ray task that does not run any of our code first, as Ray Data's own file listing does.
listed = ray.get(ray.remote(lambda url: len(Storage(url).find())).remote(f"s3://{bucket}/{late}"))
print(json.dumps({"transformed": res["transformed"], "listed": listed,
                  "session": ray._private.worker._global_node.get_session_dir_path()}))
"""


@pytest.mark.parametrize("when", ["early", "late"])
def test_secrets_are_never_written_and_reach_workers_set_after_ray_started(models, s3_bucket, tmp_path, when):
    """Issue 16, defect 2, in a fresh process with its own Ray. `early`: the sentinel credentials
    are in the environment when Ray starts; `late`: Ray starts without any and the job sets them
    after. Either way the workers reach S3 (the actors and a bare Ray task), and the sentinels are
    in no file under Ray's session folder, MLflow's store, Prefect's home or the outputs."""
    import json
    import uuid

    sentinels = [f"AKIASENTINEL{uuid.uuid4().hex[:8].upper()}", f"sentinel-secret-{uuid.uuid4().hex}",
                 f"sentinel-token-{uuid.uuid4().hex}"]
    env = dict(os.environ, REINSTRUMENT_PROGRESS="0", RAY_ADDRESS="", PREFECT_HOME=str(tmp_path / "prefect-home"))
    r = subprocess.run([sys.executable, "-c", SENTINEL_JOB, models.clips_url, s3_bucket, *sentinels, when],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["transformed"] == 2 and out["listed"] > 0
    mlflow_db = os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")
    needles = [s.encode() for s in sentinels]
    hits = files_holding(needles, out["session"], os.path.dirname(mlflow_db), str(tmp_path / "prefect-home"),
                         os.path.expanduser("~/.prefect"))
    for k in s3_keys(s3_bucket, f"{when}/"):
        body = boto3.client("s3").get_object(Bucket=s3_bucket, Key=k)["Body"].read()
        hits += [f"s3://{s3_bucket}/{k}" for n in needles if n in body]
    assert hits == [], f"a secret was written to {hits}"


def test_failed_jobs_end_failed_in_mlflow_and_leave_no_run_folder(models, tmp_path, monkeypatch):
    """Issue 16, defect 6: a transform, a sweep and a training that fail mid-way."""
    import jobs.sweep as sweep_mod
    import jobs.train as train_mod
    import jobs.transform as transform_mod
    from infra import tracking
    from schemas.sweep import SweepConfig

    def boom(*a, **k):
        raise RuntimeError("injected failure")

    c = tracking.client()
    monkeypatch.setattr(transform_mod, "run_batches", boom)
    with pytest.raises(RuntimeError, match="injected"):
        transform_mod.transform_job(models.clips_url, InputSelection(domain="violin", limit=1), config(seed=12),
                                       TransformLogistics(num_actors=0, out_url=str(tmp_path / "t"), run_id="fails"))
    assert not (tmp_path / "t/runs/fails").exists()
    exp = c.get_experiment_by_name("reinstrument-transform").experiment_id
    run = c.search_runs([exp], "attributes.run_name = 'fails'")[0]
    assert run.info.status == "FAILED"
    # issue 44: the error the command prints as one line is whole in MLflow
    assert run.data.tags["reinstrument.error"] == "RuntimeError: injected failure"
    text = Path(c.download_artifacts(run.info.run_id, "error.txt", str(tmp_path))).read_text()
    assert text.startswith("Traceback") and "RuntimeError: injected failure" in text

    monkeypatch.setattr(sweep_mod, "make_embedding", boom)
    cfg = SweepConfig(model="models:/reinstrument-flute@champion", t_inits=(0.6,), lams=(1.0,),
                      sampler=SamplerConfig(steps=6), reference_split=None, reference_limit=3, vocoded_reference=False)
    with pytest.raises(RuntimeError, match="injected"):
        sweep_mod.sweep_job(models.clips_url, InputSelection(domain="violin", limit=1), cfg,
                        TransformLogistics(num_actors=0, out_url=str(tmp_path / "s")))
    runs = c.search_runs([c.get_experiment_by_name("reinstrument-sweep").experiment_id], "",
                         order_by=["attributes.start_time DESC"], max_results=1)
    assert runs[0].info.status == "FAILED"

    monkeypatch.setattr(train_mod, "fit", boom)
    features_url = extract_features([models.clips_url], str(tmp_path / "f"),
                                    FeatureConfig(segment_frames=64, segment_hop_frames=32, roles=("clean",)),
                                    local=True)["features_url"]
    with pytest.raises(RuntimeError, match="injected"):
        train_mod.train_job(TrainConfig(features_url=features_url, **{**TRAIN_PRESETS["tiny"], "steps": 3,
                                                                        "domain": "flute", "seed": 99}),
                              TrainLogistics(num_workers=0, out_url=str(tmp_path / "train")))
    runs = c.search_runs([c.get_experiment_by_name("reinstrument-train").experiment_id], "",
                         order_by=["attributes.start_time DESC"], max_results=1)
    assert runs[0].info.status == "FAILED"


def test_a_trained_vocoder_decodes_transform_outputs_and_is_part_of_their_identity(models, tmp_path):
    """Issue 18: `vocoder` names a registered vocoder; its version is pinned into each output key
    (Griffin-Lim outputs of the same clips keep theirs), and a model of another kind is refused."""
    from infra import tracking
    from jobs.transform import transform_job

    assert tracking.champion_version("reinstrument-vocoder") == "1"
    log = TransformLogistics(num_actors=0, out_url=str(tmp_path))
    sel = InputSelection(domain="violin", limit=1)
    gl = transform_job(models.clips_url, sel, config(), log)
    neural = transform_job(models.clips_url, sel, config(vocoder="models:/reinstrument-vocoder@champion"), log)
    a, b = (ShardedDataset.at(r["outputs_url"], "outputs").read().to_pylist()[0] for r in (gl, neural))
    assert a["clip_id"] == b["clip_id"] and a["output_key"] != b["output_key"] and a["sha256"] != b["sha256"]
    assert abs(a["duration_s"] - b["duration_s"]) < 1e-9
    assert tracking.client().get_run(neural["mlflow_run_id"]).data.params["vocoder"] == "reinstrument-vocoder/1"
    assert (a["vocoder"], b["vocoder"]) == ("griffin-lim (4 it.)", "reinstrument-vocoder/1")  # the outputs table says
    # the default (`auto`) is the registered champion, pinned as its version
    auto = transform_job(models.clips_url, sel, config(vocoder="auto"), log)
    c = ShardedDataset.at(auto["outputs_url"], "outputs").read().to_pylist()[0]
    assert c["vocoder"] == "reinstrument-vocoder/1" and c["sha256"] == b["sha256"]
    with pytest.raises(ValueError, match="is not a vocoder"):
        transform_job(models.clips_url, sel, config(vocoder="models:/reinstrument-flute@champion"), log)


def test_a_champion_moved_mid_sweep_never_mixes_into_it(models, tmp_path):
    """`champion` moves to another version after the first grid point: every point still uses the
    version the sweep resolved at its start (the points used to re-resolve the alias)."""
    from infra import tracking
    from jobs import sweep as sweep_mod
    from schemas.sweep import SweepConfig

    name = "reinstrument-flute"
    v1 = tracking.champion_version(name)
    v2 = tracking.client().copy_model_version(f"models:/{name}/{v1}", name).version
    moved: list[str] = []

    def step(fn, *args, **kwargs):
        out = fn(*args, **kwargs)
        if fn is sweep_mod.grid_point and not moved:
            tracking.set_champion(name, v2)
            moved.append(v2)
        return out

    cfg = SweepConfig(model=f"models:/{name}@champion", t_inits=(0.6, 1.0), lams=(1.0,), sampler=SamplerConfig(steps=4),
                      window=WindowConfig(window_frames=64, overlap_frames=16), vocoder="griffin-lim", vocoder_iters=4,
                      reference_split=None, reference_limit=4)
    try:
        res = sweep_mod.sweep_job(models.clips_url, InputSelection(domain="violin", limit=2), cfg,
                                  TransformLogistics(num_actors=0, out_url=str(tmp_path)), step=step)
    finally:  # the session's store as other modules expect it
        tracking.set_champion(name, v1)
        tracking.client().delete_model_version(name, v2)
    assert moved == [v2] and res["model_version"] == f"{name}/{v1}"
    used = {m for run in os.listdir(tmp_path / "runs")
            for m in ShardedDataset.at(str(tmp_path / "runs" / run / "outputs"), "outputs").read(["model"])["model"].to_pylist()}
    assert used == {f"{name}/{v1}"}, f"grid points used {sorted(used)}"
