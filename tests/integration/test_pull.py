"""`reinstrument pull` (issue 16, defect 7): only what the outputs table lists, every object
verified, a changed source noticed on a re-pull, and a failed pull leaves DEST as it was."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from infra.datasets import ShardBuffer, ShardedDataset
from infra.storage import Storage
from tasks.audio import encode_flac
from tasks.pull import ChecksumError, pull_run
from tests.conftest import tone

BIN = os.path.dirname(sys.executable)


def make_run(url: str, n: int = 3) -> Storage:
    """A run folder as `reinstrument transform` leaves it: audio objects and the outputs table."""
    run = Storage(url)
    buf = ShardBuffer(ShardedDataset(run.child("outputs"), "outputs"), "h", shard_rows=2)
    for k in range(n):
        flac = encode_flac(tone(300 + 50 * k, 1.0), 16000)
        run.write_bytes(f"audio/key{k}.flac", flac)
        buf.add({"output_key": f"key{k}", "run_id": "r", "clip_id": f"c{k}", "output_uri": run.uri(f"audio/key{k}.flac"),
                 "sha256": hashlib.sha256(flac).hexdigest(), "sample_rate_hz": 16000, "duration_s": 1.0})
    buf.commit()
    run.write_bytes("run.json", b'{"run_id": "r"}')
    return run


def _tree(path) -> dict[str, bytes]:
    return {os.path.relpath(os.path.join(d, f), path): open(os.path.join(d, f), "rb").read()
            for d, _, fs in os.walk(path) for f in fs}


@pytest.fixture(params=["local", "s3"])
def run(request, tmp_path):
    if request.param == "local":
        return make_run(str(tmp_path / "src/runs/r"))
    bucket = request.getfixturevalue("s3_bucket")
    return make_run(f"s3://{bucket}/root/runs/r")


def test_only_listed_objects_are_pulled_each_verified(run, tmp_path):
    run.write_bytes("audio/not-in-the-table.flac", b"x")
    run.write_bytes("outputs/shards/part-orphan-00000.parquet", b"an uncommitted shard")
    res = pull_run(run.url, str(tmp_path / "dest"))
    got = _tree(tmp_path / "dest")
    assert res.files == 3 and res.fetched == 3
    assert sorted(k for k in got if k.startswith("audio/")) == [f"audio/key{k}.flac" for k in range(3)]
    assert not any("orphan" in k for k in got)
    pulled = ShardedDataset.at(str(tmp_path / "dest/outputs"), "outputs").read(["output_key"]).num_rows
    assert pulled == 3


def test_a_repull_notices_a_changed_source_and_keeps_dest(run, tmp_path):
    dest = tmp_path / "dest"
    pull_run(run.url, str(dest))
    before = _tree(dest)
    again = pull_run(run.url, str(dest))
    assert again.fetched == 0 and again.skipped == 3 and _tree(dest) == before
    run.write_bytes("audio/key1.flac", encode_flac(tone(999, 1.0), 16000))  # changed after commit
    with pytest.raises(ChecksumError, match="key1.flac"):
        pull_run(run.url, str(dest))
    assert _tree(dest) == before


def test_a_failed_pull_leaves_dest_as_it_was(run, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("the user's own file")
    before = _tree(dest)
    run.delete("audio/key2.flac")
    with pytest.raises(FileNotFoundError, match="missing at the source"):
        pull_run(run.url, str(dest))
    assert _tree(dest) == before
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")] == []  # no staging debris


def test_pull_of_a_deleted_object_is_one_line_on_the_cli(tmp_path):
    run = make_run(str(tmp_path / "src/runs/r"))
    run.delete("audio/key0.flac")
    r = subprocess.run([f"{BIN}/reinstrument", "pull", run.url, "--out", str(tmp_path / "dest")], capture_output=True,
                       text=True, env=dict(os.environ, REINSTRUMENT_PROGRESS="0"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "missing at the source" in r.stderr and not (tmp_path / "dest").exists()


def add_recordings(run: Storage) -> list[str]:
    """Whole recordings as `transform` writes them: files named after their sources, and their table."""
    names = ["take 1.flute.flac", "sub/take 2.flute.flac"]
    buf = ShardBuffer(ShardedDataset(run.child("recording_rows"), "recordings"), "h", shard_rows=8)
    for k, name in enumerate(names):
        flac = encode_flac(tone(400 + 20 * k, 2.0), 16000)
        run.write_bytes(f"recordings/{name}", flac)
        buf.add({"recording_key": f"rec{k}", "run_id": "r", "source_id": f"s{k}", "name": name,
                 "output_uri": run.uri(f"recordings/{name}"), "sha256": hashlib.sha256(flac).hexdigest(),
                 "clip_keys": [f"key{k}"], "clips": 1})
    buf.commit()
    return names


def test_whole_recordings_are_pulled_by_their_names_and_verified(run, tmp_path):
    names = add_recordings(run)
    res = pull_run(run.url, str(tmp_path / "dest"))
    got = _tree(tmp_path / "dest")
    assert res.recordings == 2 and res.files == 2 and res.fetched == 2
    assert sorted(k for k in got if k.startswith("recordings/")) == sorted(f"recordings/{n}" for n in names)
    assert not any(k.startswith("audio/") for k in got)  # the clips only on request
    sums = got["SHA256SUMS"].decode()
    assert all(f"  recordings/{n}\n" in sums for n in names)
    both = pull_run(run.url, str(tmp_path / "both"), clips=True)
    assert both.files == 5 and sum(k.startswith("audio/") for k in _tree(tmp_path / "both")) == 3
    run.write_bytes(f"recordings/{names[1]}", encode_flac(tone(999, 2.0), 16000))  # changed after commit
    with pytest.raises(ChecksumError, match="take 2.flute.flac"):
        pull_run(run.url, str(tmp_path / "dest"))
