"""Where metric inputs come from: a folder or S3 prefix of audio files, or a `clips` dataset
(read only through its manifest), yielded one decoded item at a time."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from infra.datasets import ShardedDataset
from infra.storage import Storage
from tasks.audio import decode_audio_bytes

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


@dataclass(frozen=True)
class AudioItem:
    item_id: str                    # clip_id, or the file's path relative to the set's root
    audio: np.ndarray               # mono float32
    sample_rate_hz: int
    midi: bytes | None = None       # the clip's MIDI when known (clips column, or a .mid sidecar)


def content_key(item: AudioItem) -> str:
    """What a cache of results about `item` may be keyed by: its ID and a hash of its samples
    (a folder's IDs are file names, which two different folders can share)."""
    h = hashlib.sha256(np.ascontiguousarray(item.audio, np.float32).tobytes())
    h.update(str(item.sample_rate_hz).encode())
    return f"{item.item_id}#{h.hexdigest()[:32]}"


def clip_matches(row: dict, domain: str | None = None, role: str | None = None, split: str | None = None) -> bool:
    """A clips row passes the filters that are set (None: any)."""
    return all(not want or row[col] == want for col, want in (("domain", domain), ("role", role), ("split", split)))


def is_clips_dataset(url: str) -> bool:
    return ShardedDataset.at(url, "clips").exists()


def list_audio(url: str) -> list[str]:
    return sorted(p for p in Storage(url).find() if p.lower().endswith(AUDIO_EXTENSIONS))


def item_ids(url: str, *, domain: str | None = None, role: str | None = None, split: str | None = None,
             limit: int | None = None) -> list[str]:
    """The IDs `audio_items` would yield, in the same order, without decoding any audio."""
    if not is_clips_dataset(url):
        return list_audio(url)[:limit]
    ids = []
    for _, table in ShardedDataset.at(url, "clips").iter_shards(["clip_id", "domain", "role", "split"]):
        ids += [r["clip_id"] for r in table.to_pylist()
                if clip_matches(r, domain, role, split)]
    return ids[:limit]


def item_content_ids(url: str, *, domain: str | None = None, role: str | None = None, split: str | None = None,
                     limit: int | None = None) -> list[str]:
    """Like `item_ids`, but unique to the content without decoding anything: a clips dataset's IDs
    are content hashes already; a folder's file names get each file's SHA-256."""
    ids = item_ids(url, domain=domain, role=role, split=split, limit=limit)
    if is_clips_dataset(url):
        return ids
    st = Storage(url)
    return [f"{rel}#{st.sha256(rel)}" for rel in ids]


def audio_items(url: str, *, domain: str | None = None, role: str | None = None, split: str | None = None,
                limit: int | None = None) -> Iterator[AudioItem]:
    """Items of a clips dataset (filtered by domain/role/split) or of a folder of audio files
    (filters do not apply; a `<stem>.mid` next to a file is its MIDI)."""
    if is_clips_dataset(url):
        ds = ShardedDataset.at(url, "clips")
        count = 0
        for _, table in ds.iter_shards(["clip_id", "domain", "role", "split", "midi", "audio_flac"]):
            for row in table.to_pylist():
                if not clip_matches(row, domain, role, split):
                    continue
                if limit is not None and count >= limit:
                    return
                audio, sr = decode_audio_bytes(row["audio_flac"])
                count += 1
                yield AudioItem(row["clip_id"], audio, sr, row["midi"])
        return
    if domain or role or split:
        raise ValueError(f"{url} is a folder of audio files, not a clips dataset: --domain/--role/--split "
                         "filter clips datasets only")
    storage = Storage(url)
    files = list_audio(url)
    if not files:
        raise ValueError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) and no clips manifest under {url}")
    for rel in files[:limit]:
        try:
            audio, sr = decode_audio_bytes(storage.read_bytes(rel))
        except Exception as e:
            raise ValueError(f"cannot decode {storage.uri(rel)} ({type(e).__name__}: {e}); expected WAV/FLAC/OGG/MP3") from e
        mid = os.path.splitext(rel)[0] + ".mid"
        yield AudioItem(rel, audio, sr, storage.read_bytes(mid) if storage.exists(mid) else None)
