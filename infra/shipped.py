"""Models the repository ships (weights/<name>/model.pt with its card.json), named by
`shipped:<name>[@<sha256 prefix>]` URIs. A name, never a path; every load checks the file against
its card's SHA-256, so a damaged or replaced file is refused, never loaded."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from infra.settings import get_settings

SHIPPED = "shipped:"


SHIPPED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


MODEL_FILE = "model.pt"   # a model the registry loads (tasks/builders)
PROBE_FILE = "probe.pt"   # the instrument probe (tasks/probe.py): a metric's weights, never registered


def shipped_path(kind: str, file: str = MODEL_FILE) -> Path:
    """weights/<name>/<file> for a shipped model's folder name (a name, never a path: `shipped:`
    must not become a way to load any file on disk)."""
    if not SHIPPED_NAME.fullmatch(kind):
        raise ValueError(f"shipped:{kind}: expected the name of a shipped model (letters, digits, '-', '_'; "
                         f"one of {', '.join(shipped_names()) or 'none'}), not a path")
    return Path(get_settings().shipped_dir) / kind / file


def shipped_names() -> list[str]:
    root = Path(get_settings().shipped_dir)
    return sorted(p.parent.name for p in root.glob("*/model.pt")) if root.is_dir() else []


def shipped_bytes(kind: str, file: str = MODEL_FILE) -> tuple[bytes, str]:
    """A shipped model's checkpoint and SHA-256, verified against its card on every load: a damaged
    or replaced file is refused, never loaded."""
    import json

    path = shipped_path(kind, file)
    if not path.is_file():
        raise ValueError(f"no shipped model {kind!r}: expected {path} (shipped: "
                         f"{', '.join(shipped_names()) or 'none'})")
    card_path = path.with_name("card.json")
    try:
        want = json.loads(card_path.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"shipped:{kind}: {card_path} is missing or has no sha256; a shipped model is loaded "
                         "only with its card") from None
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if sha != want:
        raise ValueError(f"shipped:{kind}: {path} does not match its card (sha256 {sha[:16]}, card {str(want)[:16]}); "
                         "the file is damaged or was replaced: restore it (git checkout -- weights/) or ship it "
                         "again with `reinstrument shipped add`")
    return data, sha


def pinned_shipped(uri: str, file: str = MODEL_FILE) -> tuple[str, bytes]:
    """A `shipped:<kind>[@<sha256 prefix>]` URI -> (pinned URI, checkpoint bytes). A pinned URI
    whose file has changed since (a retrained model checked out) is refused, not silently mixed."""
    kind, _, want = uri[len(SHIPPED):].partition("@")
    data, sha = shipped_bytes(kind, file)
    if want and not sha.startswith(want):
        raise ValueError(f"{uri}: the shipped {kind} model at {shipped_path(kind, file)} has changed (sha256 {sha[:16]}, "
                         f"pinned {want}); re-run without the pinned URI to use the new file")
    return f"{SHIPPED}{kind}@{sha[:16]}", data


def shipped_card(kind: str) -> dict:
    """weights/<name>/card.json as written (empty when unreadable: the load refuses such a file)."""
    import json

    try:
        return json.loads(shipped_path(kind).with_name("card.json").read_text())
    except (OSError, ValueError):
        return {}


DECODES_LATENTS_OF = "decodes_latents_of"   # a shipped decoder fine-tune's card: whose encoder it keeps


def shipped_decoder_for(encoder: str) -> str | None:
    """The shipped autoencoder whose card says it decodes the latents of `encoder` (a pinned
    shipped URI, e.g. shipped:autoencoder@0933dc9536e9a1d6): a decoder fine-tuned with that
    encoder frozen. None when the repository ships none."""
    found = [k for k in shipped_names() if shipped_card(k).get(DECODES_LATENTS_OF) == encoder]
    return f"{SHIPPED}{found[0]}" if found else None


def probe_bytes(uri: str) -> tuple[str, bytes]:
    """The instrument probe's file and its pinned URI: `shipped:<name>[@sha]` (weights/<name>/probe.pt,
    checked against its card) or a path/URL of a probe.pt written by train-probe, pinned as
    `<path>@<sha256 prefix>` so a replaced file is refused mid-run, not silently mixed."""
    if uri.startswith(SHIPPED):
        return pinned_shipped(uri, PROBE_FILE)
    from infra.storage import Storage

    path, _, want = uri.rpartition("@") if "@" in uri.rsplit("/", 1)[-1] else (uri, "", "")
    data = Storage(path).read_bytes("")
    sha = hashlib.sha256(data).hexdigest()
    if want and not sha.startswith(want):
        raise ValueError(f"{uri}: the probe file has changed (sha256 {sha[:16]}, pinned {want})")
    return f"{path}@{sha[:16]}", data
