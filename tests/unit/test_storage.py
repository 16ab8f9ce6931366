import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest

from infra.datasets import ShardedDataset, ShardBuffer
from infra.storage import PathEscapeError, Storage, safe_relpath
from schemas.tables import FEATURES, SCHEMA_VERSIONS
from tasks.feature_values import decode_values


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/etc/passwd", "s3://other/x", "..", "", "a\\..\\b"])
def test_paths_that_escape_are_refused(bad):
    with pytest.raises(PathEscapeError):
        safe_relpath(bad)


def test_inner_dotdot_is_normalised():
    assert safe_relpath("a/b/../c.wav") == "a/c.wav"


def test_atomic_write_leaves_nothing_when_writer_raises(tmp_path, monkeypatch):
    st = Storage(str(tmp_path))
    st.write_bytes("d/x.bin", b"old")

    def boom(*a, **k):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        st.write_bytes("d/x.bin", b"new" * 1000)
    monkeypatch.undo()
    assert st.read_bytes("d/x.bin") == b"old"
    assert os.listdir(tmp_path / "d") == ["x.bin"]  # temp file removed


def _rows(n, tag="a"):
    return [dict(feature_id=f"{tag}{i}", clip_id="c", kind="logmel", domain="d", role="clean", split="train",
                 segment_index=i, start_frame=0, num_frames=2, num_valid_frames=2, num_bins=2,
                 values=np.full(4, i, "<f2").tobytes(), values_dtype="float16", config_hash="h") for i in range(n)]


def test_shard_round_trip_and_metadata(tmp_path):
    ds = ShardedDataset.at(str(tmp_path / "f"), "features")
    buf = ShardBuffer(ds, "cfg123", shard_rows=3)
    for r in _rows(7):
        buf.add(r)
    m = buf.commit()
    assert [s.name for s in m.shards] == [f"shards/part-{buf.writer_id}-0000{i}.parquet" for i in range(3)]
    t = ds.read()
    assert t.num_rows == 7 and t.column("feature_id").to_pylist() == [f"a{i}" for i in range(7)]
    assert decode_values(t.column("values")[5].as_py(), "float16", 2, 2).tolist() == [[5.0] * 2] * 2
    import io
    import pyarrow.parquet as pq
    meta = pq.read_schema(io.BytesIO(ds.storage.read_bytes(m.shards[0].name))).metadata
    assert meta[b"reinstrument.schema_version"] == SCHEMA_VERSIONS["features"].encode()
    assert meta[b"reinstrument.config_hash"] == b"cfg123"


def test_reader_trusts_only_the_manifest(tmp_path):
    ds = ShardedDataset.at(str(tmp_path / "f"), "features")
    buf = ShardBuffer(ds, "h", shard_rows=10)
    for r in _rows(2):
        buf.add(r)
    buf.commit()
    # A writer that wrote a shard and died before its manifest: the shard is invisible.
    ds.write_shard("part-orphan-00000", pa.Table.from_pylist(_rows(5, "orphan"), schema=FEATURES), "h")
    assert ds.read().num_rows == 2
    assert set(ds.read(["feature_id"]).column("feature_id").to_pylist()) == {"a0", "a1"}


def test_empty_commit_writes_nothing(tmp_path):
    ds = ShardedDataset.at(str(tmp_path / "f"), "features")
    assert ShardBuffer(ds, "h", 10).commit() is None
    assert not ds.exists()


def test_sigkill_mid_write_leaves_no_visible_object(tmp_path):
    """A writer killed while writing a large object: no final key, and listings hide the temp."""
    script = textwrap.dedent(f"""
        import os, sys
        from infra.storage import Storage
        real_write = None
        st = Storage({str(tmp_path)!r})
        class Slow(bytes): pass
        import builtins
        orig_open = builtins.open
        def slow_open(path, mode="r", *a, **k):
            f = orig_open(path, mode, *a, **k)
            if "wb" in mode:
                w = f.write
                def write(data):
                    n = w(data[: len(data) // 2]); f.flush()
                    print("HALF", flush=True); sys.stdin.readline()
                    return n + w(data[len(data) // 2:])
                f.write = write
            return f
        builtins.open = slow_open
        st.write_bytes("shards/part-00000.parquet", b"x" * 10_000_000)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "HALF"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    st = Storage(str(tmp_path))
    assert not st.exists("shards/part-00000.parquet")
    assert st.find() == []


def test_merge_extra_keeps_every_writers_additions():
    from infra.datasets import merge_extra

    a = {"inputs": {"x": 1}, "pieces": ["p1", "p2"], "config": {"n": 1}}
    b = {"inputs": {"y": 2}, "pieces": ["p2", "p3"], "config": {"n": 2}}
    assert merge_extra(a, b) == {"inputs": {"x": 1, "y": 2}, "pieces": ["p1", "p2", "p3"], "config": {"n": 2}}


def test_a_buffer_committed_twice_never_reuses_a_shard_name(tmp_path):
    ds = ShardedDataset.at(str(tmp_path / "f"), "features")
    buf = ShardBuffer(ds, "h", shard_rows=2)
    for r in _rows(3, "a"):
        buf.add(r)
    buf.commit()
    for r in _rows(3, "b"):
        buf.add(r)
    m = buf.commit()
    names = [s.name for s in m.shards]
    assert len(names) == len(set(names)) == 4 and ds.read().num_rows == 6


def test_checkpoints_are_a_shortcut_that_changes_nothing(tmp_path, monkeypatch):
    import infra.datasets as datasets

    monkeypatch.setattr(datasets, "CHECKPOINT_EVERY", 5)
    ds = ShardedDataset.at(str(tmp_path / "f"), "features")
    for k in range(12):
        buf = ShardBuffer(ds, "h", shard_rows=10)
        for r in _rows(2, f"w{k}-"):
            buf.add(r)
        buf.commit({"inputs": {f"k{k}": k}})
    assert os.listdir(tmp_path / "f/_checkpoints")
    with_cp = ds.manifest()
    for f in os.listdir(tmp_path / "f/_checkpoints"):
        os.remove(tmp_path / "f/_checkpoints" / f)
    without = ds.manifest()
    assert with_cp.commits == without.commits and with_cp.extra == without.extra
    assert [s.name for s in with_cp.shards] == [s.name for s in without.shards]
    assert ds.read().num_rows == 24 and len(with_cp.extra["inputs"]) == 12


def test_a_row_added_twice_is_read_once(tmp_path):
    ds = ShardedDataset.at(str(tmp_path / "f"), "features")
    for _ in range(2):  # two writers add the same content-hashed rows
        buf = ShardBuffer(ds, "h", shard_rows=10)
        for r in _rows(3) + _rows(1):  # and one is repeated inside a shard
            buf.add(r)
        buf.commit()
    assert ds.manifest().num_rows == 8
    assert sorted(ds.read(["values"]).column("values").to_pylist()) == [np.full(4, i, "<f2").tobytes() for i in range(3)]
    assert ds.read(["feature_id"]).column("feature_id").to_pylist() == ["a0", "a1", "a2"]


def test_a_dataset_of_the_first_layout_is_refused_not_read_as_empty(tmp_path):
    from infra.datasets import SchemaMismatchError

    (tmp_path / "old").mkdir()
    (tmp_path / "old/_manifest.json").write_text('{"table": "clips", "schema_version": "1", "shards": []}')
    ds = ShardedDataset.at(str(tmp_path / "old"), "clips")
    for call in (ds.exists, ds.manifest, ds.read, lambda: ShardedDataset.detect(str(tmp_path / "old"))):
        with pytest.raises(SchemaMismatchError, match="re-create the dataset"):
            call()


def test_prefect_retries_only_what_a_second_try_can_fix():
    """flows/steps.transient, Prefect's retry condition of the retried steps: S3 faults that
    outlived storage's retries, dropped connections, timeouts and MLflow 5xx are retried; a bad
    config or a missing model fails at once."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE
    from prefect.states import Failed

    from flows.steps import transient
    from infra.storage import StorageError

    retried = [StorageError("S3 write of s3://b/k failed after its retries"), ConnectionResetError("reset"),
               TimeoutError("stalled"), MlflowException("down", error_code=TEMPORARILY_UNAVAILABLE),
               MlflowException("boom", error_code=INTERNAL_ERROR)]
    failed_at_once = [ValueError("unknown preset 'x'"), FileNotFoundError("no such clips"),
                      MlflowException("no such model", error_code=RESOURCE_DOES_NOT_EXIST), KeyError("bug")]
    assert all(transient(None, None, Failed(data=e)) for e in retried)
    assert not any(transient(None, None, Failed(data=e)) for e in failed_at_once)
