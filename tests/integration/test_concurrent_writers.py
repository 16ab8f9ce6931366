"""Many writers into one dataset at the same time, locally and on the moto S3 server, one of them
killed with SIGKILL mid-write: every committed row is read exactly once, nothing of the killed
writer is visible, and nobody's commit is lost (issue 16, defect 1)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from infra.datasets import ShardedDataset

# Writer W adds its own rows W-0..W-(n-1) and the rows shared-0..shared-4 that every writer adds
# (a race to add the same content-hashed row: it must be read once).
WRITER = textwrap.dedent("""
    import sys, time
    from infra.datasets import ShardBuffer, ShardedDataset
    url, w, n, die = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "die"
    def row(key):
        return dict(source_uri=key, source_id=key, stage="ingest", reason="r", detail=w, config_hash="h")
    buf = ShardBuffer(ShardedDataset.at(url, "quarantine"), "h", shard_rows=3)
    print("READY", flush=True)
    sys.stdin.readline()                      # all writers start together
    for k in range(n):
        buf.add(row(f"{w}-{k}"))
        if die and k == 4:                    # a shard is written, the commit is not
            print("FLUSHED", flush=True)
            time.sleep(600)
    for k in range(5):
        buf.add(row(f"shared-{k}"))
    buf.commit()
    print("DONE", flush=True)
""")


def _run_writers(url: str, n_writers: int, rows_each: int, kill_one: bool) -> list[str]:
    procs = []
    for i in range(n_writers):
        die = kill_one and i == n_writers - 1
        p = subprocess.Popen([sys.executable, "-c", WRITER, url, f"w{i}", str(rows_each), "die" if die else "live"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
        procs.append((f"w{i}", die, p))
    for _, _, p in procs:
        assert p.stdout.readline().strip() == "READY"
    for _, _, p in procs:  # release them all at once
        p.stdin.write("go\n")
        p.stdin.flush()
    committed = []
    for name, die, p in procs:
        if die:
            assert p.stdout.readline().strip() == "FLUSHED"
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
        else:
            out, _ = p.communicate(timeout=240)
            assert p.returncode == 0 and "DONE" in out, out
            committed.append(name)
    return committed


def _check(url: str, committed: list[str], killed: list[str], rows_each: int) -> None:
    ds = ShardedDataset.at(url, "quarantine")
    keys = ds.read(["source_uri"]).column("source_uri").to_pylist()
    assert len(keys) == len(set(keys)), "a row is read twice"
    expected = {f"{w}-{k}" for w in committed for k in range(rows_each)} | {f"shared-{k}" for k in range(5)}
    assert set(keys) == expected
    assert not any(k.startswith(tuple(f"{w}-" for w in killed)) for k in keys)
    assert len(ds.manifest().commits) == len(committed)


@pytest.mark.parametrize("n_writers", [2, 4, 8])
def test_concurrent_writers_local(tmp_path, n_writers):
    url = str(tmp_path / "q")
    kill = n_writers == 8
    committed = _run_writers(url, n_writers, 23, kill_one=kill)
    _check(url, committed, [f"w{n_writers - 1}"] if kill else [], 23)
    # the killed writer's shard is on disk but listed by no commit
    if kill:
        assert any(f.startswith("part-") for f in os.listdir(tmp_path / "q/shards"))


def test_eight_concurrent_writers_on_s3_one_killed(s3_bucket):
    url = f"s3://{s3_bucket}/q"
    committed = _run_writers(url, 8, 23, kill_one=True)
    _check(url, committed, ["w7"], 23)


def test_two_concurrent_ingests_into_one_destination_keep_both_batches(tmp_path):
    """The defect as a user met it: two `reinstrument ingest` runs of different folders into the
    same destination at once; both batches must be in the dataset afterwards."""
    from tests.conftest import tone, write_wav

    for name, f0 in (("a", 440.0), ("b", 300.0)):
        for k in range(6):
            write_wav(str(tmp_path / f"src-{name}/flute/{name}{k}.wav"), tone(f0 + 10 * k, 3.0))
    dest = str(tmp_path / "dest")
    cmd = [os.path.join(os.path.dirname(sys.executable), "reinstrument"), "ingest"]
    env = dict(os.environ, REINSTRUMENT_PROGRESS="0")
    procs = [subprocess.Popen(cmd + [str(tmp_path / f"src-{n}"), dest, "--no-prefect"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for n in "ab"]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
    clips = ShardedDataset.at(f"{dest}/clips", "clips").read(["clip_id", "source_uri"]).to_pylist()
    sources = {r["source_uri"].rsplit("/", 1)[1] for r in clips}
    assert sources == {f"{n}{k}.wav" for n in "ab" for k in range(6)}
    assert len({r["clip_id"] for r in clips}) == len(clips)
