"""Pull a transformation run's outputs (audio, `outputs` table, manifest, run.json) from any
storage URL to a local folder, verifying every audio file's SHA-256 against the table.
Idempotent: a file already present with the right checksum is not fetched again."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from infra.datasets import ShardedDataset
from infra.progress import progress
from infra.storage import Storage


class ChecksumError(ValueError):
    """A pulled file does not match the checksum the outputs table records."""


@dataclass(frozen=True)
class PullResult:
    files: int
    fetched: int
    skipped: int
    dest: str


def _sha256_file(path: str) -> str | None:
    if not os.path.exists(path):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def pull_run(run_url: str, dest_dir: str) -> PullResult:
    src, dest = Storage(run_url), Storage(os.path.abspath(dest_dir))
    outputs = ShardedDataset(src.child("outputs"), "outputs")
    if not outputs.exists():
        raise ValueError(f"{run_url} has no outputs manifest (outputs/_manifest.json); expected a run folder "
                         "<root>/runs/<run_id> written by `reinstrument transform`")
    rows = outputs.read(["output_key", "sha256"]).to_pylist()
    fetched = skipped = 0
    for r in progress(rows, len(rows), "pull"):
        rel = f"audio/{r['output_key']}.flac"
        if _sha256_file(dest.path(rel)) == r["sha256"]:
            skipped += 1
            continue
        data = src.read_bytes(rel)
        got = hashlib.sha256(data).hexdigest()
        if got != r["sha256"]:
            raise ChecksumError(f"{src.uri(rel)}: SHA-256 {got} does not match the outputs table's {r['sha256']}")
        dest.write_bytes(rel, data)
        fetched += 1
    meta = [p for p in src.find("outputs")] + (["run.json"] if src.exists("run.json") else [])
    for rel in sorted(meta, key=lambda p: p.endswith("_manifest.json")):  # the manifest last
        dest.write_bytes(rel, src.read_bytes(rel))
    sums = "".join(f"{r['sha256']}  audio/{r['output_key']}.flac\n" for r in rows)
    dest.write_bytes("SHA256SUMS", sums.encode())
    return PullResult(len(rows), fetched, skipped, dest.url)
