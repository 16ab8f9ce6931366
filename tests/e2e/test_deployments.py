"""The users' three commands, end to end against services as teams run them: a Prefect server on
127.0.0.1 and an `mlflow server` (artifacts on S3), both on one PostgreSQL; prefect.yaml's
deployments on a process work pool run by a `prefect worker` (sweep, compare, a nightly run
cancelled mid-run and re-run), then `reinstrument serve` running the same three deployments on one
box (nightly), moto S3 for inputs and outputs. `prefect deployment run 'sweep-t-init/default'` on a
tiny model while `champion` moves mid-run; the nightly deployment triggered twice with arrivals in
between, then killed mid-run and finished by the next trigger; the sweep's listening report opened
in headless Chromium; a run pulled."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import boto3
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from infra.datasets import ShardedDataset
from schemas.configs import FeatureConfig
from schemas.training import TRAIN_PRESETS, TrainConfig, TrainLogistics
from tests.e2e.browser import check_page, chromium_path
from tests.services import free_port, http_ok, mlflow_server, postgres, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
BIN = os.path.dirname(sys.executable)
MODEL = "models:/reinstrument-flute@champion"


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc: the flow-run subprocesses serve starts may sit in
    their own session, out of reach of a process-group kill)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _kill_tree(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    """The serve process and the flow-run subprocesses it started, all at once (a crash)."""
    for pid in [proc.pid] + _descendants(proc.pid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def stack(s3_env, built_corpus, tmp_path_factory):
    """As teams run the services: one PostgreSQL (throwaway data directory) holding the Prefect
    server's database and the MLflow server's backend store, MLflow artifacts on S3; two tiny flute
    versions (champion: 1), violin source and conditional models; the env a worker or serve needs."""
    from infra import tracking
    from jobs.train import train_job
    from ray_actors.features import extract_features

    tmp = tmp_path_factory.mktemp("e2e")
    bucket = f"e2e-{os.urandom(4).hex()}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    port = free_port()
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "REINSTRUMENT_MLFLOW_ARTIFACTS")}
    with contextlib.ExitStack() as services:
        pg = services.enter_context(postgres())
        for db in ("prefect", "mlflow"):
            pg.create_database(db)
        mlflow_uri = services.enter_context(mlflow_server(pg.url("mlflow", "pg8000"), f"s3://{bucket}/mlflow", tmp))
        env = dict(os.environ, PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
                   PREFECT_SERVER_ANALYTICS_ENABLED="false", MLFLOW_TRACKING_URI=mlflow_uri,
                   REINSTRUMENT_MLFLOW_ARTIFACTS=f"s3://{bucket}/mlflow", REINSTRUMENT_PROGRESS="0",
                   COLUMNS="250")  # rich tables of the prefect CLI unwrapped
        env.pop("PREFECT_PROFILES_PATH", None)
        log = open(tmp / "server.log", "w")
        server = subprocess.Popen([f"{BIN}/prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                  env=env | {"PREFECT_API_DATABASE_CONNECTION_URL": pg.url("prefect", "asyncpg")},
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        services.callback(lambda: (os.killpg(server.pid, signal.SIGTERM), server.wait(timeout=60)))
        os.environ.update(MLFLOW_TRACKING_URI=env["MLFLOW_TRACKING_URI"],
                          REINSTRUMENT_MLFLOW_ARTIFACTS=env["REINSTRUMENT_MLFLOW_ARTIFACTS"])
        try:
            _, corpus = built_corpus
            feats = extract_features([corpus.clips_url], str(tmp / "features"),
                                     FeatureConfig(segment_frames=64, segment_hop_frames=32, roles=("clean",)), local=True)
            # two flute versions (the champion moves from 1 to 2 mid-sweep), and the violin source
            # model and violin->flute conditional model of the comparison's DDIB and conditional rows
            for over in ({"domain": "flute"}, {"domain": "flute", "seed": 1}, {"domain": "violin"},
                         {"domain": "flute", "cond_domain": "violin"}):
                train_job(TrainConfig(features_url=feats["features_url"], **{**TRAIN_PRESETS["tiny"], "steps": 20, **over}),
                          TrainLogistics(num_workers=0, out_url=str(tmp / "training")))
            tracking.set_champion("reinstrument-flute", "1")
            wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/api/health"), "Prefect server", server,
                       tmp / "server.log", timeout_s=180)
            yield {"env": env, "bucket": bucket, "tmp": tmp, "corpus": corpus, "pg": pg,
                   "api": f"http://127.0.0.1:{port}/api"}
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _serve(stack, name: str) -> subprocess.Popen:
    cmd = [f"{BIN}/reinstrument", "serve", "--inputs", f"s3://{stack['bucket']}/incoming", "--model", MODEL,
           "--out", f"s3://{stack['bucket']}/out", "--actors", "0"]
    proc = subprocess.Popen(cmd, env=stack["env"], stdout=open(stack["tmp"] / f"{name}.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120  # every deployment registered
    while time.time() < deadline:
        r = subprocess.run([f"{BIN}/prefect", "deployment", "ls"], env=stack["env"], capture_output=True, text=True)
        if all(f"{d}/default" in r.stdout for d in ("sweep-t-init", "compare-methods", "reinstrument-nightly")):
            return proc
        assert proc.poll() is None, open(stack["tmp"] / f"{name}.log").read()[-3000:]
        time.sleep(1)
    raise AssertionError("serve did not register the three deployments")


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _worker(stack) -> subprocess.Popen:
    """prefect.yaml's deployments on a process work pool, a worker polling it: as teams deploy, with
    the nightly's watched prefix and output root exported before `prefect deploy` (its comment's steps)."""
    env = stack["env"]
    nightly = {"REINSTRUMENT_NIGHTLY_INPUTS": f"s3://{stack['bucket']}/incoming-c",
               "REINSTRUMENT_NIGHTLY_OUT": f"s3://{stack['bucket']}/out-c"}
    for cmd in (["work-pool", "create", "reinstrument", "--type", "process"], ["--no-prompt", "deploy", "--all"]):
        r = subprocess.run([f"{BIN}/prefect", *cmd], cwd=ROOT, env=env | nightly, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for name in ("sweep-t-init/default", "compare-methods/default", "reinstrument-nightly/default"):
        r = subprocess.run([f"{BIN}/prefect", "deployment", "inspect", name], env=env, capture_output=True, text=True)
        assert "'work_pool_name': 'reinstrument'" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    # the nightly: prefect.yaml's cron and parameters, the exported variables filled in
    assert "0 2 * * *" in r.stdout and "UTC" in r.stdout, r.stdout[-3000:]
    assert all(v in r.stdout for v in nightly.values()) and "shipped:instruments-latent" in r.stdout, r.stdout[-3000:]
    return subprocess.Popen([f"{BIN}/prefect", "worker", "start", "--pool", "reinstrument", "--type", "process"],
                            cwd=stack["tmp"], env=env, stdout=open(stack["tmp"] / "worker.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _run_deployment(stack, name: str, params: dict, watch: bool = True, timeout_s: int = 900):
    cmd = [f"{BIN}/prefect", "deployment", "run", name, "--params", json.dumps(params)]
    if not watch:
        return subprocess.run(cmd, env=stack["env"], capture_output=True, text=True, timeout=120)
    r = subprocess.run(cmd + ["--watch", "--watch-timeout", str(timeout_s)],
                       env=stack["env"], capture_output=True, text=True, timeout=timeout_s + 60)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def _flow_run_id(r: subprocess.CompletedProcess) -> str:
    m = re.search(r"UUID: ([0-9a-f-]{36})", r.stdout)
    assert r.returncode == 0 and m, r.stdout[-2000:] + r.stderr[-2000:]
    return m.group(1)


def _flow_state(stack, run_id: str) -> str:
    with urllib.request.urlopen(f"{stack['api']}/flow_runs/{run_id}", timeout=30) as f:
        return json.load(f)["state"]["type"]


def _wait_final(stack, run_id: str, timeout_s: float = 900) -> str:
    deadline = time.time() + timeout_s
    while (state := _flow_state(stack, run_id)) not in FINAL:
        assert time.time() < deadline, f"flow run {run_id} still {state} after {timeout_s:.0f} s"
        time.sleep(0.5)
    return state


def _wait_mid_run(stack, run_id: str, started) -> None:
    """Until `started()` holds while the flow run is still going (so what follows lands mid-run)."""
    deadline = time.time() + 600
    while not started():
        assert _flow_state(stack, run_id) not in FINAL and time.time() < deadline, f"flow run {run_id} ended unseen"
        time.sleep(0.2)


def _committed_runs(bucket: str, prefix: str = "out/runs/") -> set[str]:
    """Transform runs under `prefix` with at least one committed outputs shard."""
    return {m.group(1) for k in keys(bucket, prefix) if (m := re.match(rf"{prefix}([^/]+)/outputs/_commits/", k))}


def _column(bucket: str, dataset: str, column: str) -> list:
    return ShardedDataset.at(f"s3://{bucket}/{dataset}", "outputs").read([column]).column(column).to_pylist()


def keys(bucket: str, prefix: str) -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


def _get(bucket: str, key: str) -> bytes:
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def _put_inputs(stack, items, prefix: str = "incoming") -> None:
    for item in items:
        buf = io.BytesIO()
        sf.write(buf, item.audio, item.sample_rate_hz, format="WAV")
        boto3.client("s3").put_object(Bucket=stack["bucket"], Key=f"{prefix}/{item.item_id[:12]}.wav", Body=buf.getvalue())


def _nightly_datasets(bucket: str, out: str = "out") -> list[str]:
    return sorted({m.group(1) for k in keys(bucket, f"{out}/nightly/")
                   if (m := re.search(r"^(.*/runs/nightly-[^/]+/outputs)/_commits/[^/]+\.json$", k))})


def _nightly_outputs(bucket: str, out: str = "out") -> list[str]:
    """source IDs of every committed nightly output, across every dated run."""
    return [i for d in _nightly_datasets(bucket, out) for i in _column(bucket, d, "clip_id")]


def _check_whole(bucket: str, out: str) -> None:
    """Every committed output's audio is there, whole (its recorded SHA-256) and decodable."""
    for d in _nightly_datasets(bucket, out):
        for row in ShardedDataset.at(f"s3://{bucket}/{d}", "outputs").read(["output_uri", "sha256"]).to_pylist():
            body = _get(bucket, row["output_uri"].split(f"s3://{bucket}/", 1)[1])
            assert hashlib.sha256(body).hexdigest() == row["sha256"], row["output_uri"]
            assert len(sf.read(io.BytesIO(body))[0]) > 0


def test_sweep_and_nightly_deployments_end_to_end(stack):
    from infra import tracking
    from tasks.metrics.sources import audio_items

    bucket = stack["bucket"]
    worker, out = _worker(stack), {"out": f"s3://{bucket}/out", "actors": 0}
    figures: dict = {}
    try:
        # --- sweep-t-init: the exact CLI a user types, run by the pool's worker; tiny config, 2 inputs,
        # 3 grid points ---------------------------------------------------------------------------------
        config = {"model": MODEL, "t_inits": [0.3, 0.6, 1.0], "lams": [1.0], "sampler": {"steps": 6},
                  "window": {"window_frames": 64, "overlap_frames": 16}, "vocoder_iters": 4,
                  "reference_split": None, "reference_limit": 4}
        r = _run_deployment(stack, "sweep-t-init/default", {"inputs": stack["corpus"].clips_url, "model": MODEL,
                                                            "domain": "violin", "split": None, "limit": 2,
                                                            "config": config} | out, watch=False)
        sweep_run = _flow_run_id(r)
        # `champion` moves to version 2 once the first grid point is committed: the run keeps the
        # version it pinned at its start for every later point
        _wait_mid_run(stack, sweep_run, lambda: _committed_runs(bucket))
        tracking.set_champion("reinstrument-flute", "2")
        points_before_move = len(_committed_runs(bucket))
        assert _wait_final(stack, sweep_run) == "COMPLETED"
        figures["sweep_points_before_champion_moved"] = points_before_move
        assert points_before_move < 3, "the champion moved after the last grid point began: nothing was tested"
        assert {m for rid in _committed_runs(bucket) for m in _column(bucket, f"out/runs/{rid}/outputs", "model")} \
            == {"reinstrument-flute/1"}, "a grid point used the champion that moved mid-run"
        tracking.set_champion("reinstrument-flute", "1")  # rolled back, as a team would, for the rest
        sweep_keys = keys(bucket, "out/sweeps/")
        (rec_key,) = [k for k in sweep_keys if k.endswith("/recommendation.json")]
        folder = rec_key.rsplit("/", 1)[0]
        rec = json.loads(_get(bucket, rec_key))
        assert rec["recommended"]["1"]["t_init"] in (0.3, 0.6, 1.0) and rec["model_version"] == "reinstrument-flute/1"
        table = pq.read_table(io.BytesIO(_get(bucket, f"{folder}/metrics.parquet"))).to_pylist()
        for t in (0.3, 0.6, 1.0):
            got = {r["metric"]: r for r in table if r["t_init"] == t}
            assert {"fad", "jd", "f1_midi"} <= set(got) and got["jd"]["n"] == 2, (t, sorted(got))
        assert _get(bucket, f"{folder}/tradeoff.png")[:8] == b"\x89PNG\r\n\x1a\n"
        run_audio = [k for k in keys(bucket, "out/runs/") if k.endswith(".flac")]
        assert len(run_audio) >= 3 * 2  # each grid point's 2 outputs (plus the vocoded reference)
        c = tracking.client()
        parent = c.get_run(rec["mlflow_run_id"])
        children = c.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        # the 3 grid points and the plain-generation anchor (tau_init 0, lambda 1)
        assert parent.info.status == "FINISHED" and len(children) == 4
        assert sorted(float(ch.data.params["warm.t_init"]) for ch in children) == [0.0, 0.3, 0.6, 1.0]
        assert {ch.data.params["model"] for ch in children} == {"reinstrument-flute/1"}
        assert all({"fad_musicnn-msd", "jd", "f1_midi"} <= set(ch.data.metrics) for ch in children)
        assert {a.path for a in c.list_artifacts(parent.info.run_id)} >= {"tradeoff.png", "report", "metrics.parquet"}

        # --- the listening report in a real browser -------------------------------------------------
        check_report(bucket, f"{folder}/report/", stack["tmp"] / "report", min_audio=2 * (1 + 3), min_images=3)

        # --- compare-methods at the sweep's operating point, all three tasks, every method: tables,
        # plot, page in a browser -----------------------------------------------------------------------
        cmp = {"split": None, "limit": 2, "neighbours": [-0.1], "reference_split": None, "reference_limit": 4,
               "listen": 1, "window": config["window"], "vocoder_iters": 4,
               "source_models": {"timbre": "models:/reinstrument-violin@champion"},
               "conditional_models": {"timbre": "models:/reinstrument-cond-violin-to-flute@champion"}}
        _run_deployment(stack, "compare-methods/default", {"inputs": stack["corpus"].clips_url, "model": MODEL,
                                                           "config": cmp} | out)
        (res_key,) = [k for k in keys(bucket, "out/compare/") if k.endswith("/result.json")]
        compared = json.loads(_get(bucket, res_key))
        folder = res_key.rsplit("/", 1)[0]
        assert compared["operating_points"]["timbre"]["t_init"] == rec["operating_point"]["t_init"]
        rows = pq.read_table(io.BytesIO(_get(bucket, f"{folder}/comparison.parquet"))).to_pylist()
        methods = {t: {r["key"] for r in rows if r["task"] == t} for t in ("timbre", "midi2real", "enhance")}
        common = {"guide", "identity", "warm", "generation", "target"}
        assert methods["timbre"] >= common | {"ddib", "conditional"}, methods
        assert methods["midi2real"] >= common and methods["enhance"] >= common, methods
        for (task, key) in {(r["task"], r["key"]) for r in rows}:
            got = {r["metric"] for r in rows if (r["task"], r["key"], r["subset"]) == (task, key, "all")}
            assert {"fad", "jd"} <= got, (task, key, got)
        assert _get(bucket, f"{folder}/methods.png")[:8] == b"\x89PNG\r\n\x1a\n"
        # one input per task: its guide, every transforming method's output and its true target
        check_report(bucket, folder + "/report/", stack["tmp"] / "compare-report",
                     min_audio=sum(len(m) for m in methods.values()), min_images=2)

        # --- a nightly run cancelled mid-run with `prefect flow-run cancel`: the worker stops it;
        # what it committed is whole, its batch stays pending, and the next run finishes the rest once
        # eight inputs, one per committed shard: room for the cancel to land mid-run on a busy machine
        clips = list(audio_items(stack["corpus"].clips_url, domain="violin", role="clean", limit=8))
        n = len(clips)
        assert n >= 6, f"the stack's corpus has {n} violin clips"
        _put_inputs(stack, clips, prefix="incoming-c")
        # the deployment's own inputs and out (prefect.yaml, filled in at deploy time); a tiny target
        night = {"actors": 0, "steps": 35, "targets": [{"model": MODEL, "t_init": 0.6}], "clips_per_task": 1}
        cancelled = _flow_run_id(_run_deployment(stack, "reinstrument-nightly/default", night, watch=False))
        _wait_mid_run(stack, cancelled, lambda: _nightly_outputs(bucket, "out-c"))
        r = subprocess.run([f"{BIN}/prefect", "flow-run", "cancel", cancelled], env=stack["env"], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        assert _wait_final(stack, cancelled, 300) == "CANCELLED"
        mid = len(_nightly_outputs(bucket, "out-c"))
        assert 1 <= mid < n, f"the cancel landed after {mid} of {n} outputs"
        _check_whole(bucket, "out-c")
        assert json.loads(_get(bucket, "out-c/nightly/state.json"))["pending"] is not None
        _run_deployment(stack, "reinstrument-nightly/default", night)
        done = _nightly_outputs(bucket, "out-c")
        assert len(done) == len(set(done)) == n, "after a cancel, every input transformed exactly once"
        _check_whole(bucket, "out-c")
        figures["nightly_cancelled_after_outputs"] = mid
    finally:
        # idle by now (every run finished); killed outright because Prefect 3.8's worker can hang
        # in its own SIGTERM handling (NoEventLoopError at shutdown, seen in one of two runs)
        _kill_tree(worker)
    for name in ("sweep-t-init/default", "compare-methods/default", "reinstrument-nightly/default"):
        r = subprocess.run([f"{BIN}/prefect", "deployment", "delete", name], env=stack["env"], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    # the one-box case from here: `reinstrument serve` registers the same three deployments, served
    serve = _serve(stack, "serve-1")
    try:
        # --- nightly: two arrivals, each processed once; the first night at the operating point ----
        clips = list(audio_items(stack["corpus"].clips_url, domain="violin", role="clean", limit=7))
        params = {"targets": [{"model": MODEL, "t_init": 0.6}], "steps": 4, "clips_per_task": 1}
        _put_inputs(stack, clips[:2])
        _run_deployment(stack, "reinstrument-nightly/default", {"targets": [{"model": MODEL}], "clips_per_task": 1})
        assert len(_nightly_outputs(bucket)) == 2
        op = compared["operating_points"]["timbre"]  # the sweep's, applied whole by compare and by the nightly job
        night = next(k.rsplit("/_commits/", 1)[0] for k in keys(bucket, "out/nightly/") if "/outputs/_commits/" in k)
        for row in ShardedDataset.at(f"s3://{bucket}/{night}", "outputs").read().to_pylist():
            assert (row["t_init"], row["lam"], row["steps"], row["sampler"]) == \
                (op["t_init"], op["lam"], op["sampler"]["steps"], op["sampler"]["name"])
        _put_inputs(stack, clips[2:3])
        _run_deployment(stack, "reinstrument-nightly/default", params)
        done = _nightly_outputs(bucket)
        assert len(done) == len(set(done)) == 3, "the second night must process only the new arrival"
        nights = [k.rsplit("/report/", 1)[0] + "/report/" for k in keys(bucket, "out/nightly/") if k.endswith("/report/report.html")]
        assert len(nights) == 2
        check_report(bucket, nights[0], stack["tmp"] / "night-report", min_audio=2 * 2, min_images=2)

        # --- a night killed mid-run, finished by the next trigger -----------------------------------
        _put_inputs(stack, clips[3:7])
        r = _run_deployment(stack, "reinstrument-nightly/default", params | {"steps": 35}, watch=False)
        assert r.returncode == 0, r.stderr
        deadline = time.time() + 600
        while len(_nightly_outputs(bucket)) < 4:  # at least one of the four new inputs committed
            assert time.time() < deadline, open(stack["tmp"] / "serve-1.log").read()[-3000:]
            time.sleep(0.2)
        _kill_tree(serve)
        mid = len(_nightly_outputs(bucket))
        assert 4 <= mid < 7, f"the kill landed after {mid - 3} of 4 new outputs"
        state = json.loads(_get(bucket, "out/nightly/state.json"))
        assert state["pending"] is not None, "the killed night left no pending batch"
    finally:
        _kill_tree(serve)
    serve = _serve(stack, "serve-2")
    try:
        _run_deployment(stack, "reinstrument-nightly/default", params)
        done = _nightly_outputs(bucket)
        assert len(done) == len(set(done)) == 7, "every input transformed exactly once"
        assert json.loads(_get(bucket, "out/nightly/state.json"))["pending"] is None
    finally:
        _kill_tree(serve, signal.SIGTERM)
    check_pull(bucket, stack["tmp"] / "pulled")
    # the runs above live in PostgreSQL: the Prefect server's flow runs, MLflow's runs and aliases
    pg = stack["pg"]
    figures["postgres_rows"] = {"prefect.flow_run": pg.count("prefect", "SELECT count(*) FROM flow_run"),
                                "mlflow.runs": pg.count("mlflow", "SELECT count(*) FROM runs"),
                                "mlflow.registered_model_aliases":
                                    pg.count("mlflow", "SELECT count(*) FROM registered_model_aliases")}
    print("\n[e2e]", json.dumps(figures))
    assert figures["postgres_rows"]["prefect.flow_run"] >= 8 and figures["postgres_rows"]["mlflow.runs"] >= 10
    assert figures["postgres_rows"]["mlflow.registered_model_aliases"] >= 3


def check_report(bucket: str, prefix: str, dest, *, min_audio: int, min_images: int) -> None:
    """Download the report folder and open it over HTTP, as S3 static hosting would serve it."""
    if chromium_path() is None:
        pytest.fail("chromium is missing: `make setup` installs Debian's chromium for this check")
    for k in keys(bucket, prefix):
        path = dest / k[len(prefix):]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_get(bucket, k))
    handler = functools.partial(_QuietHandler, directory=str(dest))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = check_page(f"http://127.0.0.1:{server.server_address[1]}/report.html")
    finally:
        server.shutdown()
    html = (dest / "report.html").read_text()
    assert page.console_errors == []
    assert len(page.audio) == html.count("<audio") >= min_audio
    assert all(a["error"] is None and (a["duration"] or 0) > 0 for a in page.audio), page.audio
    assert len(page.images) == html.count("<img") >= min_images and all(i["width"] > 0 for i in page.images), page.images


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def check_pull(bucket: str, dest) -> None:
    """`reinstrument pull` of a finished nightly run reproduces its whole recordings and tables (and,
    with --clips, every clip's audio) byte for byte; tampering with a recording is caught."""
    run_key = next(k for k in keys(bucket, "out/nightly/") if "/outputs/_commits/" in k)
    run_url = f"s3://{bucket}/{run_key.rsplit('/outputs/', 1)[0]}"
    prefix = run_url.split(f"s3://{bucket}/", 1)[1] + "/"

    def pulled_as_stored(folder, tops: tuple[str, ...]) -> list[str]:
        ks = [k for k in keys(bucket, prefix) if k[len(prefix):].startswith(tops)]
        for k in ks:
            assert hashlib.sha256((folder / k[len(prefix):]).read_bytes()).digest() == hashlib.sha256(_get(bucket, k)).digest(), k
        return ks

    r = subprocess.run([f"{BIN}/reinstrument", "pull", run_url, "--out", str(dest)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    whole = pulled_as_stored(dest, ("recordings/", "recording_rows/", "outputs/", "run.json"))
    assert sum("/recordings/" in k for k in whole) >= 1, "the nightly run wrote no whole recordings"
    assert not (dest / "audio").exists(), "clip audio was pulled without --clips"
    r = subprocess.run([f"{BIN}/reinstrument", "pull", "--clips", run_url, "--out", str(dest / "clips")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sum("/audio/" in k for k in pulled_as_stored(dest / "clips", ("audio/",))) == 2
    rec = next(k for k in keys(bucket, prefix + "recordings/"))
    boto3.client("s3").put_object(Bucket=bucket, Key=rec, Body=_get(bucket, rec)[:-10] + b"\0" * 10)
    r = subprocess.run([f"{BIN}/reinstrument", "pull", run_url, "--out", str(dest / "again")], capture_output=True, text=True)
    assert r.returncode != 0 and "ChecksumError" in r.stdout + r.stderr, r.stdout + r.stderr
