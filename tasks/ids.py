"""Content-hash IDs: the same inputs and config give the same ID on any machine, so a re-run
finds its own work."""
from __future__ import annotations

import hashlib

ID_HEX_CHARS = 20


def content_id(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        b = p if isinstance(p, bytes) else repr(p).encode()
        h.update(len(b).to_bytes(8, "little"))  # length-prefix: ("ab","c") != ("a","bc")
        h.update(b)
    return h.hexdigest()[:ID_HEX_CHARS]


def split_for(key: str, fractions: tuple[float, float, float]) -> str:
    """Deterministic train/valid/test assignment of a *group* key (a piece or a source file),
    so every clip of one piece lands in one split."""
    u = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0x1_0000_0000
    if u < fractions[0]:
        return "train"
    return "valid" if u < fractions[0] + fractions[1] else "test"
