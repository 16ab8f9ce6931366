"""Shared fixtures: real local services started once per session (moto S3 on 127.0.0.1,
local Ray, a Prefect test server), tiny synthetic audio, and small configs."""
from __future__ import annotations

import os
import shutil
import uuid

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("REINSTRUMENT_PROGRESS", "0")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from schemas.configs import ClipConfig, CorpusConfig, DegradeConfig  # noqa: E402

SR = 16000


def tone(freq_hz: float, seconds: float, sr: int = SR, channels: int = 1, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def ship_card(folder) -> None:
    """The card a shipped model is loaded with: its file's SHA-256 (infra/shipped.shipped_bytes)."""
    import hashlib
    import json
    from pathlib import Path

    folder = Path(folder)
    (folder / "card.json").write_text(json.dumps({"sha256": hashlib.sha256((folder / "model.pt").read_bytes()).hexdigest()}))


def files_holding(needles: list[bytes], *roots: str) -> list[str]:
    """Every file under `roots` that holds one of `needles` (sentinel secrets), with which."""
    hits = []
    for root in roots:
        for d, _, files in os.walk(root):
            for f in files:
                try:
                    data = open(os.path.join(d, f), "rb").read()
                except OSError:
                    continue
                hits += [f"{os.path.join(d, f)} holds {n.decode()[:14]}…" for n in needles if n in data]
    return hits


def sigkill_once_committed(cmd: list[str], outputs_url: str, rows: int, timeout_s: float = 600, **popen) -> int:
    """Start CMD in a session of its own, SIGKILL the whole session once the outputs table at
    OUTPUTS_URL has committed ROWS rows, and return how many it had (a kill mid-run)."""
    import signal
    import subprocess
    import time

    from infra.datasets import ShardedDataset

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, **popen)
    outputs = ShardedDataset.at(outputs_url, "outputs")
    deadline = time.time() + timeout_s
    while time.time() < deadline and (not outputs.exists() or outputs.manifest().num_rows < rows):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return outputs.manifest().num_rows


def write_wav(path, x, sr=SR, subtype="PCM_16"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, x, sr, subtype=subtype)
    return path


@pytest.fixture
def small_clip_cfg() -> ClipConfig:
    return ClipConfig(clip_s=2.0, overlap_s=0.5, min_clip_s=0.5)


@pytest.fixture(scope="session")
def tiny_corpus_cfg() -> CorpusConfig:
    return CorpusConfig(max_pieces=3, instruments=("flute", "violin"), voices=("soprano",),
                        clip=ClipConfig(clip_s=4.0, overlap_s=0.0),
                        degrade=DegradeConfig())


@pytest.fixture(scope="session")
def s3_env():
    """A real moto S3 server on 127.0.0.1; storage reaches it through AWS_ENDPOINT_URL only."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                            "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="testing",
                      AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    yield f"http://{host}:{port}"
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_env):
    import boto3

    name = f"ri-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    yield name


@pytest.fixture(scope="module")
def mlflow_env(s3_env, tmp_path_factory):
    """MLflow on a sqlite file with its artifact store on the moto S3 (one bucket per module)."""
    import boto3

    bucket = f"ri-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "REINSTRUMENT_MLFLOW_ARTIFACTS")}
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    os.environ["REINSTRUMENT_MLFLOW_ARTIFACTS"] = f"s3://{bucket}/mlflow"
    yield bucket
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="session")
def ray_local(s3_env):
    """Local Ray, started after the S3 variables are set so its workers inherit them."""
    import ray

    from infra.ray_cluster import ensure_ray

    ensure_ray()
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def built_corpus(tmp_path_factory, tiny_corpus_cfg):
    """A 3-chorale corpus built once for every test that reads one."""
    from tasks.corpus import run_corpus

    root = tmp_path_factory.mktemp("corpus")
    result = run_corpus(tiny_corpus_cfg, str(root), workers=1)
    return root, result


@pytest.fixture
def copy_tree(tmp_path):
    def _copy(src):
        dst = tmp_path / f"copy-{uuid.uuid4().hex[:6]}"
        shutil.copytree(src, dst)
        return dst
    return _copy
