"""Ship a registered model in the repository (`weights/<kind>/`), the way musicnn and Basic Pitch
ship theirs: the checkpoint (a `weights_only` torch file) and a model card (card.json: how to
reproduce it, on what machine, in what time, with which measured figures)."""
from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

from infra.tracking import model_checkpoint, resolve_model
from tasks.builders import load_checkpoint_bytes

MAX_BYTES = 20 * 1024 * 1024


def cpu_flags() -> list[str]:
    try:
        flags = next(ln.split(":", 1)[1].split() for ln in open("/proc/cpuinfo") if ln.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))


def ship_job(model_uri: str, dest: str, card: dict) -> Path:
    """Write <dest>/model.pt and <dest>/card.json; refuses a file over 20 MB."""
    uri, version = resolve_model(model_uri)
    data = model_checkpoint(uri)
    if len(data) > MAX_BYTES:
        raise ValueError(f"{version} is {len(data) / 2**20:.1f} MB; shipped models must stay under 20 MB")
    _, metadata = load_checkpoint_bytes(data)  # it loads (weights only) before it is shipped
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.pt").write_bytes(data)
    full = {"model": version, "kind": metadata.get("kind"), "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data), "machine": {"cpu": platform.processor() or platform.machine(), "flags": cpu_flags()}} | card
    (out / "card.json").write_text(json.dumps(full, indent=2) + "\n")
    return out / "model.pt"
