"""Pull a transformation run (its whole recordings, or its clip audio; the `outputs` and
`recordings` tables; run.json) from any storage URL to a local folder. Only what the tables'
commits list is copied, and every object is verified: audio against its table's SHA-256, table
shards against their commit's SHA-256. A run with whole recordings brings those (named after their
sources, under recordings/) and its clips' audio only when asked; a run without brings the clips.

All or nothing: the new tree is assembled in a temporary folder beside DEST and moved into place
only once every object is verified, so a failed pull (a deleted or changed object, a dropped
connection) leaves DEST as it was. A re-pull checks every source object again (S3 ETag or local
size and mtime, recorded by the last pull): an unchanged object already in DEST is reused, a
changed one is fetched and verified, so a changed source cannot hide behind an old local copy."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from infra.datasets import ShardedDataset
from infra.progress import progress
from infra.storage import Storage, replace_tree, staging_dir
from schemas.manifest import COMMITS_DIR
from schemas.records import RunLayout

STATE = ".pull-state.json"  # rel -> source fingerprint of the last verified pull


class ChecksumError(ValueError):
    """A pulled object does not match the checksum its table or commit records."""


@dataclass(frozen=True)
class PullResult:
    files: int          # audio files in DEST (whole recordings, clips, or both)
    fetched: int
    skipped: int
    dest: str
    recordings: int     # of which whole recordings


def _fingerprint(src: Storage, rel: str) -> str:
    try:
        info = src.info(rel)
    except FileNotFoundError:
        raise FileNotFoundError(f"{src.uri(rel)} is listed by the run's outputs table but missing at the source; "
                                "expected every committed object to exist (was it deleted?)") from None
    return str(info.get("ETag") or info.get("etag") or f"{info.get('size')}:{info.get('mtime')}")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _table(src: Storage, folder: str, table: str) -> tuple[ShardedDataset, dict[str, str | None]]:
    """A run's table and its objects with the SHA-256 each must have (None: checked by its commit)."""
    ds = ShardedDataset(src.child(folder), table)
    m = ds.manifest()
    return ds, {f"{folder}/{e.name}": e.sha256 for e in m.shards} | {f"{folder}/{COMMITS_DIR}/{c}.json": None
                                                                      for c in m.commits}


def pull_run(run_url: str, dest_dir: str, clips: bool | None = None) -> PullResult:
    """CLIPS: also (True) or only (a run without whole recordings) the clip outputs' audio."""
    src = Storage(run_url)
    if not ShardedDataset(src.child(RunLayout.OUTPUTS), "outputs").exists():
        raise ValueError(f"{run_url} has no outputs table (outputs/{COMMITS_DIR}/); expected a run folder "
                         "<root>/runs/<run_id> written by `reinstrument transform`")
    outputs, wanted = _table(src, RunLayout.OUTPUTS, "outputs")
    sums = []   # (sha256, rel) of every audio file, for SHA256SUMS
    recordings = 0
    if ShardedDataset(src.child(RunLayout.RECORDING_ROWS), "recordings").exists():
        table, objects = _table(src, RunLayout.RECORDING_ROWS, "recordings")
        wanted |= objects
        recs = table.read(["name", "sha256"]).to_pylist()
        sums += [(r["sha256"], RunLayout.recording(r["name"])) for r in recs]
        recordings = len(recs)
    if clips or (clips is None and not recordings):
        sums += [(r["sha256"], RunLayout.audio(r["output_key"])) for r in outputs.read(["output_key", "sha256"]).to_pylist()]
    wanted |= {rel: sha for sha, rel in sums}
    if src.exists(RunLayout.RECORD):
        wanted[RunLayout.RECORD] = None
    final = os.path.abspath(dest_dir)
    old = Storage(final)
    state = json.loads(old.read_bytes(STATE)) if old.exists(STATE) else {}
    new_state, fetched, skipped = {}, 0, 0
    with staging_dir(final) as tmp:
        stage = Storage(tmp)
        for rel in progress(sorted(wanted), len(wanted), "pull"):
            fp = _fingerprint(src, rel)
            data = None
            if state.get(rel) == fp and old.exists(rel):
                data = old.read_bytes(rel)
                if wanted[rel] is not None and _sha256(data) != wanted[rel]:
                    data = None  # the local copy was changed: fetch again
            audio = rel.startswith((RunLayout.AUDIO + "/", RunLayout.RECORDINGS + "/"))
            if data is None:
                data = src.read_bytes(rel)
                if wanted[rel] is not None and (got := _sha256(data)) != wanted[rel]:
                    raise ChecksumError(f"{src.uri(rel)}: SHA-256 {got} does not match the recorded "
                                        f"{wanted[rel]}; the source changed after it was committed")
                fetched += audio
            else:
                skipped += audio
            stage.write_bytes(rel, data)
            new_state[rel] = fp
        stage.write_bytes("SHA256SUMS", "".join(f"{sha}  {rel}\n" for sha, rel in sums).encode())
        stage.write_bytes(STATE, json.dumps(new_state, indent=0, sort_keys=True).encode())
        replace_tree(tmp, final)
    return PullResult(len(sums), fetched, skipped, final, recordings)
