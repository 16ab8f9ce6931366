"""Ship a registered model in the repository (`weights/<kind>/`), the way musicnn and Basic Pitch
ship theirs: the checkpoint (a `weights_only` torch file) and a model card (card.json: how to
reproduce it, on what machine, in what time, with which measured figures)."""
from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

from infra import shipped, tracking
from infra.tracking import model_checkpoint, registered_name_of, resolve_model
from jobs.decoders import SHIPPED_TAG
from schemas.results import ShippedModel
from infra.settings import cpu_flags
from tasks.builders import load_checkpoint_bytes
from tasks.diffusion.checkpoint import float16_checkpoint, with_architecture

MAX_BYTES = 20 * 1024 * 1024


def ship_job(model_uri: str, dest: str, card: dict, *, float16: bool = False, architecture: dict | None = None) -> Path:
    """Write <dest>/model.pt and <dest>/card.json; refuses a file over 20 MB (`float16`: weights
    stored in half precision, half the bytes; `architecture`: decode-time fields of the model's
    config changed, e.g. a vocoder's {"phase": "pghi"}; the card says both)."""
    uri, version = resolve_model(model_uri)
    data = model_checkpoint(uri)
    if architecture:
        data = with_architecture(data, architecture)
        card = card | {"architecture_overrides": architecture}
    if float16:
        data = float16_checkpoint(data)
        card = card | {"stored_dtype": "float16 (cast to float32 on load)"}
    if len(data) > MAX_BYTES:
        raise ValueError(f"{version} is {len(data) / 2**20:.1f} MB; shipped models must stay under 20 MB"
                         + ("" if float16 else " (--float16 halves it)"))
    try:
        _, metadata = load_checkpoint_bytes(data)  # it loads (weights only) before it is shipped
    except RuntimeError as e:  # a state dict that no longer fits: an override changed a shape
        raise ValueError(f"{version} does not load with {architecture}: {str(e).splitlines()[0]}; only "
                         "decode-time fields may be changed") from None
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.pt").write_bytes(data)
    full = {"model": version, "kind": metadata.get("kind"), "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data), "machine": {"cpu": platform.processor() or platform.machine(), "flags": cpu_flags()}} | card
    (out / "card.json").write_text(json.dumps(full, indent=2) + "\n")
    return out / "model.pt"


# -- shipped models into a tracking store -------------------------------------------------------
SHIPPED_EXPERIMENT = "shipped-models"


def register_shipped(folder: str) -> ShippedModel:
    """Register `weights/<folder>/model.pt` in the tracking store (once: a version already tagged
    with the file's sha256 is reused) and make it champion where its name has none, so a trained
    model has to beat it to take over. The model card travels as an artifact of the run."""
    path = shipped.shipped_path(folder)
    data, sha = shipped.shipped_bytes(folder)  # verified against its card
    _, metadata = load_checkpoint_bytes(data)  # a file that does not load is refused before it is registered
    name = registered_name_of(metadata)
    version = tracking.find_version(name, SHIPPED_TAG, sha)
    if version is None:
        run = tracking.TrackedRun.start(SHIPPED_EXPERIMENT, f"shipped {folder}", tags={SHIPPED_TAG: sha})
        with run.failed_on_error():
            run.artifact("card.json", (path.parent / "card.json").read_bytes())
            version = tracking.log_model(run, data, code=Path(__file__).with_name("pyfunc.py"), artifact=metadata["kind"],
                                         n_bins=metadata.get("n_mels") or metadata["mel"]["n_mels"], conditional=
                                         metadata.get("cond_domain") is not None, registered_name=name)
            tracking.tag_model_version(name, version, SHIPPED_TAG, sha)
            run.finish()
        print(f"[shipped] {folder}: registered as {name}/{version}")
    champion = tracking.champion_version(name)
    if champion is None:
        tracking.set_champion(name, version)
    return ShippedModel(folder=folder, name=name, version=version, sha256=sha, champion=(champion or version) == version)


def shipped_folders() -> list[str]:
    return shipped.shipped_names()


def register_shipped_job(folders: tuple[str, ...] | None = None) -> dict[str, ShippedModel]:
    """Every shipped model (or the named ones) registered in the tracking store, by folder."""
    return {f: register_shipped(f) for f in (folders or shipped_folders())}
