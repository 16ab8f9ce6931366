"""Pull a transformation run (audio, `outputs` table, run.json) from any storage URL to a local
folder. Only what the outputs table's commits list is copied, and every object is verified: audio
against the table's SHA-256, table shards against their commit's SHA-256.

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

STATE = ".pull-state.json"  # rel -> source fingerprint of the last verified pull


class ChecksumError(ValueError):
    """A pulled object does not match the checksum its table or commit records."""


@dataclass(frozen=True)
class PullResult:
    files: int
    fetched: int
    skipped: int
    dest: str


def _fingerprint(src: Storage, rel: str) -> str:
    try:
        info = src.info(rel)
    except FileNotFoundError:
        raise FileNotFoundError(f"{src.uri(rel)} is listed by the run's outputs table but missing at the source; "
                                "expected every committed object to exist (was it deleted?)") from None
    return str(info.get("ETag") or info.get("etag") or f"{info.get('size')}:{info.get('mtime')}")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pull_run(run_url: str, dest_dir: str) -> PullResult:
    src = Storage(run_url)
    outputs = ShardedDataset(src.child("outputs"), "outputs")
    if not outputs.exists():
        raise ValueError(f"{run_url} has no outputs table (outputs/{COMMITS_DIR}/); expected a run folder "
                         "<root>/runs/<run_id> written by `reinstrument transform`")
    manifest = outputs.manifest()
    rows = outputs.read(["output_key", "sha256"]).to_pylist()
    # Every object to copy, with the SHA-256 it must have (None: checked by its own commit's list).
    wanted = {f"audio/{r['output_key']}.flac": r["sha256"] for r in rows}
    wanted |= {f"outputs/{e.name}": e.sha256 for e in manifest.shards}
    wanted |= {f"outputs/{COMMITS_DIR}/{c}.json": None for c in manifest.commits}
    if src.exists("run.json"):
        wanted["run.json"] = None
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
            audio = rel.startswith("audio/")
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
        stage.write_bytes("SHA256SUMS", "".join(f"{r['sha256']}  audio/{r['output_key']}.flac\n"
                                                for r in rows).encode())
        stage.write_bytes(STATE, json.dumps(new_state, indent=0, sort_keys=True).encode())
        replace_tree(tmp, final)
    return PullResult(len(rows), fetched, skipped, final)
