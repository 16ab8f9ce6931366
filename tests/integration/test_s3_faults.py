"""S3 that fails as real S3 does under load: the fault proxy (tests/s3_faults.py) between the
pipeline and the moto server returns 503s, resets connections before and after the store applied
a request, cuts response bodies short and stalls. Storage retries with bounded backoff, fails
with an error that names the object when the fault outlives its retries, never shows a partial
object under a final key, and a pipeline re-run after the fault finishes the job exactly once.
Each test prints what it injected and what it cost (the closing note's figures)."""
from __future__ import annotations

import os
import time

import boto3
import numpy as np
import pytest

from infra.datasets import ShardedDataset
from infra.settings import get_settings
from infra.storage import Storage, StorageError
from schemas.configs import ClipConfig, FeatureConfig, IngestConfig
from tasks.ingest import run_ingest
from tests.conftest import tone, write_wav
from tests.s3_faults import FaultProxy, Rule

pytestmark = pytest.mark.integration
SETTINGS = {"REINSTRUMENT_S3_ATTEMPTS": "4", "REINSTRUMENT_S3_READ_TIMEOUT_S": "2",
            "REINSTRUMENT_S3_CONNECT_TIMEOUT_S": "2"}


@pytest.fixture
def faulty(s3_env, s3_bucket):
    """The proxy in front of moto, named by AWS_ENDPOINT_URL for this test; bucket made direct."""
    proxy = FaultProxy(s3_env)
    # MLflow copies AWS_ENDPOINT_URL into MLFLOW_S3_ENDPOINT_URL on first use: restored with it
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", *SETTINGS)}
    os.environ.update(AWS_ENDPOINT_URL=proxy.url, **SETTINGS)
    get_settings.cache_clear()
    yield proxy, s3_bucket
    proxy.close()
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    get_settings.cache_clear()


def _direct_keys(proxy: FaultProxy, bucket: str) -> set[str]:
    """Keys as the store itself lists them (boto3 on the moto endpoint, past the proxy)."""
    s3 = boto3.client("s3", endpoint_url=proxy.upstream)
    return {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])}


@pytest.mark.parametrize("kind,method", [("503", "PUT"), ("503", "GET"), ("reset", "PUT"), ("reset-after", "PUT"),
                                         ("reset", "GET"), ("truncate", "GET"), ("stall", "GET")])
def test_each_fault_is_retried_and_the_object_is_whole(faulty, kind, method):
    proxy, bucket = faulty
    store = Storage(f"s3://{bucket}/faults")
    data = np.random.default_rng(0).bytes(300_000)
    proxy.set_rules(Rule(kind, method=method, path_contains="/blob.bin", times=2, stall_s=3.0))
    t0 = time.perf_counter()
    store.write_bytes("blob.bin", data)
    got = store.read_bytes("blob.bin")
    wall = time.perf_counter() - t0
    assert got == data
    assert proxy.injected() == {kind: 2}, proxy.log
    print(f"\n[s3 fault] {kind} on {method} x2: retried, object whole, {wall:.2f} s")


def test_a_fault_that_outlives_the_retries_names_the_object_and_leaves_nothing(faulty):
    proxy, bucket = faulty
    store = Storage(f"s3://{bucket}/out")
    proxy.set_rules(Rule("503", method="PUT", path_contains="/part-0.parquet"))
    t0 = time.perf_counter()
    with pytest.raises(StorageError, match=rf"S3 write of s3://{bucket}/out/part-0.parquet failed after its retries"):
        store.write_bytes("part-0.parquet", b"x" * 1000)
    wall = time.perf_counter() - t0
    tries = proxy.injected()["503"]
    assert tries == 4, "bounded: s3_attempts tries of a request that gets 5xx"
    assert not store.exists("part-0.parquet") and "out/part-0.parquet" not in _direct_keys(proxy, bucket)
    proxy.set_rules(Rule("503", method="GET", path_contains="/part-0.parquet"))
    with pytest.raises(FileNotFoundError):  # not a fault: nothing there, no retry storm either
        store.read_bytes("part-0.parquet")
    proxy.set_rules()
    store.write_bytes("part-0.parquet", b"x" * 1000)  # the re-run, after the fault cleared
    assert store.read_bytes("part-0.parquet") == b"x" * 1000
    print(f"\n[s3 fault] 503 on every PUT: {tries} tries, then StorageError naming the key after {wall:.1f} s")


INGEST = IngestConfig(clip=ClipConfig(clip_s=2.0, overlap_s=0.5))


def _pipeline(base: str, raw: str, actors: int = 2) -> tuple[dict, dict]:
    from ray_actors.features import extract_features

    ing = run_ingest(raw, f"{base}/ingested", INGEST)
    feats = extract_features([ing.clips_url], f"{base}/features", FeatureConfig(), num_actors=actors)
    return ing.__dict__, feats


def _rows(features_url: str) -> dict[str, bytes]:
    t = ShardedDataset.at(features_url, "features").read(["feature_id", "values"])
    ids = t.column("feature_id").to_pylist()
    assert len(ids) == len(set(ids)), "a feature row was written twice"
    return dict(zip(ids, t.column("values").to_pylist()))


def test_ingest_and_features_through_faults_equal_a_clean_run_and_a_rerun_finishes(faulty, ray_local, tmp_path):
    proxy, bucket = faulty
    raw = tmp_path / "raw"
    for k, f in enumerate((220, 330, 440, 523)):
        write_wav(str(raw / ("flute" if k % 2 else "violin") / f"t{k}.wav"), tone(f, 3.0))
    proxy.set_rules()
    t0 = time.perf_counter()
    _, clean = _pipeline(f"s3://{bucket}/clean", str(raw))
    clean_wall = time.perf_counter() - t0

    proxy.set_rules(Rule("503", every=4), Rule("reset-after", method="PUT", every=3, times=4),
                    Rule("truncate", method="GET", every=5, times=4), Rule("reset", method="GET", every=7, times=3))
    t0 = time.perf_counter()
    ing, faulted = _pipeline(f"s3://{bucket}/faulted", str(raw))
    faulted_wall = time.perf_counter() - t0
    seen = proxy.injected()
    assert seen.get("503", 0) > 0 and seen.get("reset-after", 0) > 0 and seen.get("truncate", 0) > 0, seen
    assert _rows(faulted["features_url"]) == _rows(clean["features_url"]), "faults changed the outputs"
    print(f"\n[s3 fault] ingest + features: clean {clean_wall:.1f} s, with {seen} over {proxy.requests} requests "
          f"{faulted_wall:.1f} s; outputs equal, each row once")

    # A fault that outlives the retries, on the commit that would publish the new shards: the
    # stage fails naming the object, nothing half-committed is visible, and the re-run finishes.
    write_wav(str(raw / "flute" / "t9.wav"), tone(659, 3.0))
    proxy.set_rules(Rule("503", method="PUT", path_contains="/_commits/"))
    with pytest.raises(StorageError, match=rf"s3://{bucket}/faulted/\S+/_commits/"):
        _pipeline(f"s3://{bucket}/faulted", str(raw))
    assert _rows(faulted["features_url"]) == _rows(clean["features_url"]), "a failed commit became visible"
    proxy.set_rules()
    ing2, again = _pipeline(f"s3://{bucket}/faulted", str(raw))
    rows = _rows(again["features_url"])
    assert set(_rows(clean["features_url"])) < set(rows) and again["shards_added"] >= 1
    assert _pipeline(f"s3://{bucket}/faulted", str(raw))[1]["shards_added"] == 0, "a third run redid work"


def _runs(bucket: str, root: str) -> list[str]:
    return sorted({k.split("/")[1] for k in Storage(f"s3://{bucket}/{root}").find("runs")})


def test_sweep_and_pull_through_faults_equal_a_clean_run_and_a_rerun_finishes(faulty, models, tmp_path):
    """A sweep (2 grid points, each a transform committing one clip per shard, then FAD and JD)
    and `pull` of a point's run through 503s, cut bodies and lost PUT replies: the same outputs,
    each once, the same metrics table, a pulled copy matching the run's checksums. Then a fault that
    outlives the retries stops a sweep at its metrics table, naming the object, leaving nothing
    under it; the re-run finishes without transforming anything twice."""
    from jobs.sweep import sweep_job
    from schemas.sweep import SweepConfig
    from schemas.transform import InputSelection, TransformLogistics
    from tasks.pull import pull_run
    from tests.integration.test_transform import config

    proxy, bucket = faulty
    corpus = models
    base = config(seed=5)
    cfg = SweepConfig(model=base.model, t_inits=(0.6, 1.0), lams=(1.0,), sampler=base.sampler, window=base.window,
                      vocoder="griffin-lim", vocoder_iters=4, reference_split=None, reference_limit=4,
                      anchors=False)  # the grid's own writes are what the faults hit; the anchors add nothing here

    def sweep(name: str, grid: tuple[float, ...] = (0.6, 1.0)) -> dict:
        log = TransformLogistics(num_actors=0, clips_per_task=1, out_url=f"s3://{bucket}/{name}")
        return sweep_job(corpus.clips_url, InputSelection(domain="violin", limit=3), cfg.model_copy(update={"t_inits": grid}),
                         log)

    def outputs(name: str, expected: int = 6) -> dict[str, bytes]:
        rows = [r for run in _runs(bucket, name) for r in ShardedDataset.at(
            f"s3://{bucket}/{name}/runs/{run}/outputs", "outputs").read(["output_key", "output_uri"]).to_pylist()]
        assert len(rows) == len({r["output_key"] for r in rows}) == expected, "an output missing or committed twice"
        return {r["output_key"]: Storage(r["output_uri"].rsplit("/", 1)[0]).read_bytes(r["output_uri"].rsplit("/", 1)[1])
                for r in rows}

    def table(res: dict) -> list[tuple]:
        return sorted((r["t_init"], r["metric"], r["mean"], r["n"]) for r in res["rows"])

    proxy.set_rules()
    t0 = time.perf_counter()
    clean = sweep("clean")
    clean_wall = time.perf_counter() - t0
    proxy.set_rules(Rule("503", every=12), Rule("truncate", method="GET", every=5, times=4),
                    Rule("reset-after", method="PUT", every=3, times=3))
    t0 = time.perf_counter()
    faulted = sweep("faulted")
    pulled = pull_run(Storage(f"s3://{bucket}/faulted").uri("runs/" + _runs(bucket, "faulted")[0]), str(tmp_path / "pulled"))
    faulted_wall = time.perf_counter() - t0
    seen = proxy.injected()
    assert seen.get("503", 0) > 0 and seen.get("truncate", 0) > 0 and seen.get("reset-after", 0) > 0, seen
    proxy.set_rules()
    got = outputs("faulted")
    assert got == outputs("clean"), "faults changed the outputs"
    assert table(faulted) == table(clean), "faults changed the metrics"
    assert pulled.fetched == pulled.files >= 3
    for key in (p.stem for p in (tmp_path / "pulled" / "audio").iterdir()):
        assert (tmp_path / "pulled" / "audio" / f"{key}.flac").read_bytes() == got[key]

    # a fault that outlives the retries, at the sweep's last write of its table
    proxy.set_rules(Rule("503", method="PUT", path_contains="/metrics.parquet"))
    with pytest.raises(StorageError, match=r"metrics\.parquet"):
        sweep("faulted", (0.6, 1.0, 0.3))
    stopped = set(_direct_keys(proxy, bucket))
    assert not [k for k in stopped if k.startswith("faulted/sweeps/") and k.endswith("/metrics.parquet")
                and faulted["sweep_id"] not in k], "a sweep's table became visible although its write failed"
    proxy.set_rules()
    t0 = time.perf_counter()
    again = sweep("faulted", (0.6, 1.0, 0.3))
    rerun_wall = time.perf_counter() - t0
    assert {r["t_init"] for r in again["rows"]} == {0.3, 0.6, 1.0}
    assert outputs("faulted", 9).items() >= got.items(), "the re-run transformed something twice or anew"
    print(f"\n[s3 fault] sweep (2 points x 3 clips) + pull: clean {clean_wall:.1f} s; with {seen} over {proxy.requests} "
          f"requests {faulted_wall:.1f} s; outputs and metrics equal, each once, pulled copy whole; "
          f"stopped at its table, re-run {rerun_wall:.1f} s")
