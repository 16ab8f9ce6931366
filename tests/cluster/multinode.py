"""A real multi-node Ray cluster on one machine, driven through the product's CLI as a user would:
a head node with no CPUs (so all work lands on the workers) and two worker nodes, each started by
`ray start` in its own working and temporary directory; storage is the moto S3 server only and
tracking an `mlflow server` (PostgreSQL backend store, artifacts on S3). Run inside a private network namespace (see
tests/integration/test_multinode.py): Ray's GCS and raylets listen on every interface of the
namespace, and there the only interface is loopback.

Checks, each against the one-node run (REINSTRUMENT_RAY_ADDRESS=local) of the same command:
features and DDP training (2 workers, one per node) equal bit for bit; a transform and a sweep
(outputs and metrics table) equal bit for bit; a worker node killed mid-transform loses and
duplicates nothing. MLflow's backend store is PostgreSQL. Prints one JSON line of
figures (wall times, rows, where each task ran)."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import numpy as np
import pyarrow.parquet as pq
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.services import free_port, mlflow_server, postgres  # noqa: E402 - after the path
TIMEOUT = 600


def cli(*args: str, ray: str, **env: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT,
                       env=dict(os.environ, REINSTRUMENT_RAY_ADDRESS=ray, REINSTRUMENT_PROGRESS="0", **env))
    if r.returncode:
        raise SystemExit(f"`reinstrument {' '.join(args)}` on {ray} failed:\n{r.stderr[-4000:]}")
    return r.stdout + r.stderr, time.perf_counter() - t0


class Cluster:
    """`ray start` processes: the head, then worker nodes, each blocking in its own session (so a
    node dies with everything it started when its process group is killed)."""

    def __init__(self, base: Path):
        self.base, self.port, self.nodes = base, free_port(), []
        self.address = f"127.0.0.1:{self.port}"

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        work = self.base / name  # short: Ray's socket paths under it must fit AF_UNIX's 107 bytes
        (work / "t").mkdir(parents=True)
        proc = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--block", "--disable-usage-stats",
                                 "--node-ip-address=127.0.0.1", f"--temp-dir={work / 't'}", *args],
                                cwd=work, start_new_session=True, stdout=open(work / "out.log", "w"), stderr=subprocess.STDOUT)
        self.nodes.append(proc)
        return proc

    def start(self, workers: int) -> None:
        self._start("h", "--head", f"--port={self.port}", "--num-cpus=0", "--include-dashboard=false")
        self.wait(0)
        for k in range(workers):
            self._start(f"w{k}", f"--address={self.address}", "--num-cpus=1")
        self.wait(workers)

    def wait(self, workers: int) -> None:
        import ray

        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                ray.init(address=self.address, logging_level="ERROR", log_to_driver=False)
                alive = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
                ray.shutdown()
                if len(alive) >= workers:
                    return
            except Exception:  # noqa: BLE001 - the head is still starting
                ray.shutdown()
            time.sleep(1)
        raise SystemExit(f"the cluster at {self.address} did not reach {workers} worker nodes in 180 s")

    def workers_used(self) -> dict[str, int]:
        """Ray worker processes each worker node has started (their core-worker logs under the
        node's own temp dir): proof the work ran on the cluster, not on a local Ray."""
        return {name: len(list((self.base / name / "t").rglob("python-core-worker-*.log"))) for name in ("w0", "w1")}

    def kill(self, k: int) -> None:
        os.killpg(self.nodes[k].pid, signal.SIGKILL)

    def stop(self) -> None:
        for p in reversed(self.nodes):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def rows(url: str, table: str, column: str) -> dict[str, bytes]:
    """Each row by its key, as canonical JSON without the fields that name when or by whom it
    was written."""
    from infra.datasets import ShardedDataset

    out = {}
    for row in ShardedDataset.at(url, table).read().to_pylist():
        assert row[column] not in out, f"{url}: a {table} row was written twice"
        for volatile in ("created_at", "run_id", "writer_id"):
            row.pop(volatile, None)
        out[row[column]] = json.dumps(row, sort_keys=True, default=str).encode()
    return out


def final_train_state(out: str) -> dict:
    from infra.storage import Storage
    from tasks.diffusion.checkpoint import load_train_state

    store = Storage(out)
    run = store.child("runs/" + store.find("runs")[0].split("/")[1])
    return load_train_state(run.read_bytes(json.loads(run.read_bytes("latest.json"))["checkpoint"]))


def audio_of(outputs_url: str) -> dict[str, np.ndarray]:
    from infra.datasets import ShardedDataset
    from infra.storage import Storage

    got = {}
    for r in ShardedDataset.at(outputs_url, "outputs").read(["output_key", "output_uri"]).to_pylist():
        uri = r["output_uri"]
        got[r["output_key"]] = sf.read(io.BytesIO(Storage(uri.rsplit("/", 1)[0]).read_bytes(uri.rsplit("/", 1)[1])))[0]
    return got


def main() -> None:
    from moto.server import ThreadedMotoServer

    base = Path(tempfile.mkdtemp(prefix="ric-", dir="/tmp"))
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="testing",
                      AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      REINSTRUMENT_DATA_ROOT="s3://cluster/data", REINSTRUMENT_MLFLOW_ARTIFACTS="s3://cluster/mlflow",
                      # Ray's token authentication, one token for every node and driver: a raylet
                      # accepts only callers that hold it
                      RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=os.urandom(16).hex())
    boto3.client("s3").create_bucket(Bucket="cluster")
    services = contextlib.ExitStack()
    cluster = Cluster(base)
    figures: dict = {}
    try:
        pg = services.enter_context(postgres())
        pg.create_database("mlflow")
        os.environ["MLFLOW_TRACKING_URI"] = services.enter_context(
            mlflow_server(pg.url("mlflow", "pg8000"), "s3://cluster/mlflow", base))
        raw = {"violin": (196.0, 247.0, 294.0, 330.0), "flute": (523.0, 587.0, 659.0, 698.0)}
        s3 = boto3.client("s3")
        for domain, freqs in raw.items():
            for k, f in enumerate(freqs):
                t = np.arange(int(16000 * 3.0)) / 16000
                buf = io.BytesIO()
                sf.write(buf, (0.3 * np.sin(2 * np.pi * f * t) * np.minimum(1, 20 * t)).astype(np.float32), 16000, format="WAV")
                s3.put_object(Bucket="cluster", Key=f"raw/{domain}/n{k}.wav", Body=buf.getvalue())
        # violin held out (the sweep's inputs), flute for training and as the sweep's FAD reference
        sidecar = "path,domain,split\n" + "".join(f"{d}/n{k}.wav,{d},{'test' if d == 'violin' else 'train'}\n"
                                                   for d in raw for k in range(len(raw[d])))
        s3.put_object(Bucket="cluster", Key="splits.csv", Body=sidecar.encode())
        out, _ = cli("ingest", "s3://cluster/raw", "--out", "s3://cluster/ingested", "--sidecar", "s3://cluster/splits.csv", "--no-prefect",
                     ray="local")
        clips = "s3://cluster/ingested/clips"
        t0 = time.perf_counter()
        cluster.start(workers=2)
        figures["cluster_start_s"] = round(time.perf_counter() - t0, 1)

        walls = {}
        for where, ray in (("one", "local"), ("multi", cluster.address)):
            _, walls[f"features_{where}"] = cli("features", clips, "--out", f"s3://cluster/{where}/features",
                                                 "--actors", "2", "--no-prefect", ray=ray)
        from infra.storage import Storage

        sets = {w: f"s3://cluster/{w}/features/" + Storage(f"s3://cluster/{w}/features").find()[0].split("/")[0]
                for w in ("one", "multi")}
        a, b = rows(sets["one"], "features", "feature_id"), rows(sets["multi"], "features", "feature_id")
        assert a == b and a, "features differ between one node and the cluster"
        used = cluster.workers_used()
        assert all(used.values()), f"the features job never reached both worker nodes: {used}"
        figures["feature_rows"] = len(a)

        for where, ray in (("one", "local"), ("multi", cluster.address)):
            _, walls[f"train_{where}"] = cli("train", sets[where], "--domain", "flute", "--preset", "tiny", "--train-steps", "12",
                                              "--checkpoint-every", "6", "--workers", "2", "--no-prefect", "--no-register",
                                              "--out", f"s3://cluster/{where}/train", ray=ray)
        one, multi = final_train_state("s3://cluster/one/train"), final_train_state("s3://cluster/multi/train")
        assert one["step"] == multi["step"] == 12
        assert all(np.array_equal(one["ema"][k].numpy(), multi["ema"][k].numpy()) for k in one["ema"]), \
            "DDP across two nodes trained other weights than on one"
        figures["train_equal_tensors"] = len(one["ema"])

        transform = ["transform", "--inputs", clips, "--model", "shipped:flute-latent", "--domain", "violin", "--steps", "4",
                     "--t-init", "0.5", "--actors", "2", "--clips-per-task", "1", "--no-prefect"]
        for where, ray in (("one", "local"), ("multi", cluster.address)):
            _, walls[f"transform_{where}"] = cli(*transform, "--out", f"s3://cluster/{where}/transform", "--run-id", "t",
                                                  ray=ray)
        x, y = (audio_of(f"s3://cluster/{w}/transform/runs/t/outputs") for w in ("one", "multi"))
        assert x.keys() == y.keys() and x and all(np.array_equal(x[k], y[k]) for k in x), \
            "the cluster's transform outputs differ from one node's"
        figures["transform_outputs"] = len(x)

        # A sweep (2 grid points, metrics against the real flute clips): the same outputs and the
        # same metrics table on the cluster as on one node
        sweep = ["sweep", "--inputs", clips, "--model", "shipped:flute-latent", "--domain", "violin", "--t-init", "0.5",
                 "--t-init", "1.0", "--lam", "1", "--steps", "4", "--actors", "2", "--no-prefect"]
        for where, ray in (("one", "local"), ("multi", cluster.address)):
            _, walls[f"sweep_{where}"] = cli(*sweep, "--out", f"s3://cluster/{where}/sweep", ray=ray)
        tables, audio = {}, {}
        for where in ("one", "multi"):
            store = Storage(f"s3://cluster/{where}/sweep")
            (metrics,) = [k for k in store.find("sweeps") if k.endswith("/metrics.parquet")]
            tables[where] = sorted(json.dumps({k: v for k, v in r.items() if k != "run_id"}, sort_keys=True, default=str)
                                   for r in pq.read_table(io.BytesIO(store.read_bytes(metrics))).to_pylist())
            audio[where] = {k: v for run in {k.split("/")[1] for k in store.find("runs")}
                            for k, v in audio_of(f"s3://cluster/{where}/sweep/runs/{run}/outputs").items()}
        assert tables["one"] == tables["multi"] and tables["one"], "the sweep's metrics differ on the cluster"
        assert audio["one"].keys() == audio["multi"].keys() and all(
            np.array_equal(audio["one"][k], audio["multi"][k]) for k in audio["one"]), "the sweep's outputs differ"
        figures["sweep_metric_rows"], figures["sweep_outputs"] = len(tables["one"]), len(audio["one"])

        # A worker node dies mid-transform: Ray restarts its actor on the surviving node; every
        # output is committed once, and each one's audio is whole.
        proc = subprocess.Popen([sys.executable, "-m", "cli", *transform, "--out", "s3://cluster/multi/kill", "--run-id", "k"],
                                cwd=ROOT, env=dict(os.environ, REINSTRUMENT_RAY_ADDRESS=cluster.address, REINSTRUMENT_PROGRESS="0"),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + TIMEOUT
        # the first commit seen by a plain listing (cheap, so polled often): the kill lands mid-run
        commits = {"Bucket": "cluster", "Prefix": "multi/kill/runs/k/outputs/_commits/"}
        seen = 0
        while time.time() < deadline and proc.poll() is None and not (seen := s3.list_objects_v2(**commits)["KeyCount"]):
            time.sleep(0.05)
        cluster.kill(2)  # w1 (nodes: h, w0, w1)
        committed_at_kill = seen  # one clip per commit
        try:
            log, _ = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:  # say where it stood, not only that it hung
            proc.kill()
            raise SystemExit(f"the transform hung after a node was killed ({committed_at_kill} outputs committed "
                             f"then):\n{proc.communicate()[0][-4000:]}") from None
        assert proc.returncode == 0, f"the transform did not survive losing a node:\n{log[-4000:]}"
        killed = audio_of("s3://cluster/multi/kill/runs/k/outputs")
        assert killed.keys() == x.keys(), "a node's death lost or duplicated outputs"
        assert all(np.array_equal(killed[k], x[k]) for k in x), "outputs after a node died differ"
        figures["node_killed_after_outputs"] = committed_at_kill
        figures["walls_s"] = {k: round(v, 1) for k, v in walls.items()}
        figures["ray_workers_per_node"] = cluster.workers_used()
        print("CLUSTER-FIGURES " + json.dumps(figures), flush=True)
    finally:
        cluster.stop()
        services.close()
        moto.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
