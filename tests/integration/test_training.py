"""Training end to end: features on a real S3 server (moto), 2 Ray Train workers (DDP on CPU),
MLflow on sqlite with its artifact store on the same S3, the registry's champion alias, a
SIGKILL mid-run, and loading the champion in a fresh process."""
import json
import os
import signal
import subprocess
import sys
import time

import boto3
import pytest
import torch

from ray_actors.features import extract_features
from schemas.configs import FeatureConfig
from schemas.training import TRAIN_PRESETS, TrainConfig, TrainLogistics

pytestmark = pytest.mark.integration
DOMAIN = "flute"


@pytest.fixture(scope="module")
def s3_features(mlflow_env, built_corpus):
    _, corpus = built_corpus
    out = extract_features([corpus.clips_url], f"s3://{mlflow_env}/features",
                           FeatureConfig(segment_frames=64, segment_hop_frames=32, roles=("clean",)), local=True)
    return out["features_url"]


def tiny(features_url: str, **over) -> TrainConfig:
    return TrainConfig(domain=DOMAIN, features_url=features_url, **{**TRAIN_PRESETS["tiny"], **over})


def test_two_workers_from_s3_log_register_and_guard_the_champion(s3_features, mlflow_env, ray_local, tmp_path):
    from jobs.train import train_job
    from infra import tracking

    logistics = TrainLogistics(num_workers=2, out_url=f"s3://{mlflow_env}/training")
    good = train_job(tiny(s3_features, steps=40), logistics)
    assert good["champion"] is True and good["steps"] == 40
    c = tracking.client()
    run = c.get_run(good["mlflow_run_id"])
    assert run.data.params["preset"] == "tiny" and run.data.params["steps"] == "40"
    assert run.data.tags["logistics.num_workers"] == "2"
    assert [m.step for m in c.get_metric_history(run.info.run_id, "loss")][-1] == 40
    assert c.get_metric_history(run.info.run_id, "val_loss")
    names = {a.path for a in c.list_artifacts(run.info.run_id)} | \
        {a.path for a in c.list_artifacts(run.info.run_id, "samples")}
    assert {"loss_curve.png", "result.json"} <= names
    assert any(n.endswith(".png") for n in names if n.startswith("samples/"))
    assert any(n.endswith(".wav") for n in names if n.startswith("samples/"))
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=mlflow_env, Prefix="mlflow/")["Contents"]]
    assert any(k.endswith("loss_curve.png") for k in keys), "artifacts must land in the S3 artifact store"

    # A worse run (2 steps) registers a new version but must not take the alias.
    worse = train_job(tiny(s3_features, steps=2, seed=1), logistics)
    assert worse["champion"] is False and worse["model_version"] != good["model_version"]
    assert worse["previous_champion_score"] < worse["selection_score"]
    assert tracking.champion_version(tracking.registered_name(DOMAIN)) == good["model_version"]

    # Re-running a finished run trains nothing and registers nothing new.
    again = train_job(tiny(s3_features, steps=40), logistics)
    assert again["model_version"] == good["model_version"] and again["mlflow_run_id"] == good["mlflow_run_id"]

    # The champion loads in a fresh process and drives the samplers on mels of any length.
    code = ("import torch; from infra.tracking import model_checkpoint; from tasks.builders import load_model\n"
            "from tasks.diffusion.samplers import heun, karras_sigmas\n"
            f"m = load_model(model_checkpoint('models:/reinstrument-{DOMAIN}@champion'), 'champion')\n"
            "for t in (37, 128):\n"
            "    x = heun(m.model, 80 * torch.randn(2, m.card.n_mels, t), karras_sigmas(4, 0.002, 80))\n"
            "    assert x.shape == (2, m.card.n_mels, t) and bool(torch.isfinite(x).all())\n"
            "print('ok', m.card.domain)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ok flute" in out.stdout


STEPS = {"denoiser": 20, "vocoder": 200}  # the tiny vocoder's steps take milliseconds: more of them to kill
CHECKPOINT_EVERY = {"denoiser": 5, "vocoder": 10}  # the vocoder preset's own interval


def _train_cmd(kind: str, data_url: str, out: str, workers: int) -> list[str]:
    if kind == "vocoder":  # in this process (the vocoder's default), tiny preset: checkpoints every 10 steps
        return [sys.executable, "-m", "cli", "train-vocoder", data_url, "--preset", "tiny", "--train-steps", str(STEPS[kind]),
                "--workers", "0", "--no-prefect", "--no-register", "--out", out]
    return [sys.executable, "-m", "cli", "train", data_url, "--domain", DOMAIN, "--preset", "tiny",
            "--train-steps", str(STEPS[kind]), "--checkpoint-every", str(CHECKPOINT_EVERY[kind]), "--workers", str(workers), "--no-prefect",
            "--no-register", "--out", out]


def _final_state(out: str):
    from infra.storage import Storage
    from tasks.diffusion.checkpoint import load_train_state

    run = Storage(out).child(f"runs/{os.listdir(os.path.join(out, 'runs'))[0]}")
    return load_train_state(run.read_bytes(json.loads(run.read_bytes("latest.json"))["checkpoint"]))


@pytest.mark.parametrize("kind", ["denoiser", "vocoder"])
def test_sigkill_mid_run_then_resume_matches_an_unbroken_run(kind, s3_features, built_corpus, tmp_path):
    """The denoiser on 2 Ray Train workers (DDP, gloo; each subprocess starts its own local Ray,
    REINSTRUMENT_RAY_ADDRESS=local), the vocoder in-process; run folders are local (the test is
    about the process)."""
    workers = 2
    data = s3_features if kind == "denoiser" else built_corpus[1].clips_url
    env = dict(os.environ, REINSTRUMENT_RAY_ADDRESS="local", REINSTRUMENT_PROGRESS="0")
    broken, unbroken = str(tmp_path / "broken"), str(tmp_path / "unbroken")
    proc = subprocess.Popen(_train_cmd(kind, data, broken, workers), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        runs = os.path.join(broken, "runs")
        latest = [os.path.join(runs, d, "latest.json") for d in os.listdir(runs)] if os.path.isdir(runs) else []
        if latest and os.path.exists(latest[0]) and json.load(open(latest[0]))["step"] >= CHECKPOINT_EVERY[kind]:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("no checkpoint within 300 s")
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait()
    assert json.load(open(latest[0]))["step"] < STEPS[kind], "killed too late to test resuming"
    for out in (broken, unbroken):
        r = subprocess.run(_train_cmd(kind, data, out, workers), env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    a, b = _final_state(broken), _final_state(unbroken)
    assert a["step"] == b["step"] == STEPS[kind]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k


def test_conditional_baseline_trains_on_paired_segments(s3_features, mlflow_env, tmp_path):
    """flute from violin: rows joined on (source_id, segment); in-process training; registered
    under its own name so it never takes the unconditional model's alias."""
    from jobs.train import train_job
    from infra import tracking
    from infra.datasets import ShardedDataset
    from tasks.diffusion.train_data import feature_table
    from tasks.diffusion.conditional import conditioned, generate_conditional
    from tasks.diffusion.noise import ItemNoise
    from schemas.diffusion import SamplerConfig

    cfg = tiny(s3_features, cond_domain="violin", steps=20)
    pairs = feature_table(cfg)
    assert pairs.num_rows > 0 and "cond_values" in pairs.column_names
    rows = ShardedDataset.at(s3_features, "features").read(["feature_id", "clip_id", "segment_index", "domain"])
    meta = {r["feature_id"]: r for r in rows.to_pylist()}
    clips_url = next(iter(ShardedDataset.at(s3_features, "features").manifest().extra["inputs"])).rsplit("#", 1)[0]
    source_of = {r["clip_id"]: r["source_id"] for r in
                 ShardedDataset.at(clips_url, "clips").read(["clip_id", "source_id"]).to_pylist()}
    by_values = {v: fid for fid, v in
                 zip(rows["feature_id"].to_pylist(), ShardedDataset.at(s3_features, "features").read(["values"])["values"].to_pylist())}
    for fid, cond in list(zip(pairs["feature_id"].to_pylist(), pairs["cond_values"]))[:5]:
        src = meta[by_values[cond.as_py()]]
        assert meta[fid]["domain"] == DOMAIN and src["domain"] == "violin"
        assert source_of[meta[fid]["clip_id"]] == source_of[src["clip_id"]]
        assert meta[fid]["segment_index"] == src["segment_index"]

    res = train_job(cfg, TrainLogistics(num_workers=0, out_url=str(tmp_path / "training")))
    assert res["champion"] is True
    name = tracking.registered_name(DOMAIN, "violin")
    assert name == "reinstrument-cond-violin-to-flute"
    from tasks.builders import load_model

    loaded = load_model(tracking.model_checkpoint(f"models:/{name}@champion"), name)
    model = loaded.model
    assert model.net.cfg.cond_channels == 1 and loaded.card.cond_domain == "violin"
    source = torch.randn(2, loaded.card.n_mels, 40)
    out = generate_conditional(conditioned(model, source), source, SamplerConfig(name="heun", steps=4), model.cfg,
                               ItemNoise([1, 2]))
    assert out.shape == source.shape and bool(torch.isfinite(out).all())


def test_train_flow_under_prefect_and_warm_probe(s3_features, mlflow_env, prefect_server, tmp_path):
    """The Prefect flow (a real test server) trains and registers; warm-probe reads the champion."""
    from jobs.probe import probe_job as warm_probe
    from flows.pipeline import train_flow

    res = train_flow(tiny(s3_features, steps=6, seed=3, checkpoint_every=3),
                     TrainLogistics(num_workers=0, out_url=str(tmp_path / "training")))
    from infra import tracking

    latest = max(int(v.version) for v in tracking.client().search_model_versions(f"name='reinstrument-{DOMAIN}'"))
    assert res["steps"] == 6 and res["model_version"] == str(latest)
    rows = warm_probe(f"models:/reinstrument-{DOMAIN}@champion", s3_features, "violin", [1.0, 0.0], steps=4, segments=4)
    assert [r["t_init"] for r in rows] == [1.0, 0.0]
    assert rows[0]["mean |out - guide| (normalised)"] == 0.0  # tau_init = 1 returns the guides
    assert rows[1]["mean |out - guide| (normalised)"] > 0.1
    assert all(0.0 <= r[f"P({DOMAIN})"] <= 1.0 for r in rows)
