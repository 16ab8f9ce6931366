"""Self-describing model checkpoints: the bytes carry the model's config (U-Net + EDM) and any
metadata (the model card, the training run), so loading never guesses shapes. Serialisation
only: turning a checkpoint back into a module is the builders' job (tasks/builders.py).
Reading uses torch.load(weights_only=True): a checkpoint cannot execute code."""
from __future__ import annotations

import io
import json

import torch

from schemas.autoencoder import AutoencoderConfig
from schemas.configs import StrictConfig
from schemas.diffusion import ModelConfig
from schemas.vocoder import VocosConfig

CHECKPOINT_FORMAT = "reinstrument.checkpoint"
CHECKPOINT_VERSION = 1
TRAIN_STATE_FORMAT = "reinstrument.train_state"
# The architecture configs a checkpoint may name; files without the key are denoisers (the first kind).
ARCHITECTURES: dict[str, type[StrictConfig]] = {"denoiser": ModelConfig, "vocos": VocosConfig,
                                               "mel_autoencoder": AutoencoderConfig}


def architecture_of(model: torch.nn.Module) -> StrictConfig:
    """The architecture config a model was built from (EDMPrecond: U-Net + EDM; others: their own)."""
    if hasattr(model, "net"):
        return ModelConfig(unet=model.net.cfg, edm=model.cfg)
    return model.cfg


def _name(architecture: StrictConfig) -> str:
    return next(k for k, v in ARCHITECTURES.items() if isinstance(architecture, v))


def _payload(architecture: StrictConfig, state_dict: dict, metadata: dict) -> bytes:
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "architecture": _name(architecture),
               "model_config": architecture.model_dump_json(), "metadata": json.dumps(metadata),
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}}
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def checkpoint_bytes(model: torch.nn.Module, metadata: dict | None = None) -> bytes:
    return _payload(architecture_of(model), model.state_dict(), metadata or {})


def float16_checkpoint(data: bytes) -> bytes:
    """The same checkpoint with its float32 weights stored as float16, for shipping in the
    repository under its size limit (half the bytes). Loading casts them back into the float32
    model (load_state_dict copies across dtypes), so inference runs in float32 on float16-rounded
    weights (relative rounding <= 2^-11)."""
    payload = _load(data, "cpu", CHECKPOINT_FORMAT, "checkpoint")
    for k, v in payload["state_dict"].items():
        if v.dtype == torch.float32:
            if v.abs().max() > torch.finfo(torch.float16).max:
                raise ValueError(f"weight {k} exceeds float16's range; ship it in float32")
            payload["state_dict"][k] = v.half()
    payload["stored_dtype"] = "float16"
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def with_architecture(data: bytes, overrides: dict) -> bytes:
    """The same weights and metadata under an architecture config with `overrides` applied, for
    decode-time fields (a vocoder's `phase`). The config re-validates (an unknown field or a bad
    value is refused here); a field that changes a weight's shape is refused when the result is
    loaded (load_state_dict is strict)."""
    payload = _load(data, "cpu", CHECKPOINT_FORMAT, "checkpoint")
    architecture = _architecture(payload)
    payload["model_config"] = type(architecture).model_validate(architecture.model_dump() | overrides).model_dump_json()
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def _load(data: bytes, device: str | torch.device, fmt: str, what: str) -> dict:
    try:
        payload = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except Exception as e:  # a truncated or foreign file: say so instead of a pickle traceback
        raise ValueError(f"not a readable {what} ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ValueError(f"not a {fmt} file")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{what} version {payload.get('version')}; this code reads {CHECKPOINT_VERSION}")
    return payload


def _architecture(payload: dict) -> StrictConfig:
    name = payload.get("architecture", "denoiser")
    if name not in ARCHITECTURES:
        raise ValueError(f"checkpoint of an unknown architecture {name!r}; this code reads {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name].model_validate_json(payload["model_config"])


def read_checkpoint(data: bytes, device: str | torch.device = "cpu") -> tuple[StrictConfig, dict, dict]:
    """(architecture config, state dict, metadata). Raises ValueError on anything but our format."""
    payload = _load(data, device, CHECKPOINT_FORMAT, "checkpoint")
    return _architecture(payload), payload["state_dict"], json.loads(payload["metadata"])


def train_state_bytes(model: torch.nn.Module, ema: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                      history: dict, metadata: dict, extra: dict | None = None) -> bytes:
    """Everything a resumed run needs: weights, EMA, optimizer moments, the step reached, the
    metric history so far (for the loss curve) and the model's metadata (the model card); `extra`:
    further state dicts by name (a vocoder's discriminators and their optimizer)."""
    architecture = architecture_of(model)
    payload = {"format": TRAIN_STATE_FORMAT, "version": CHECKPOINT_VERSION, "step": int(step),
               "architecture": _name(architecture), "model_config": architecture.model_dump_json(),
               "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
               "history": json.dumps(history), "metadata": json.dumps(metadata), **(extra or {})}
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def load_train_state(data: bytes) -> dict:
    """The payload of `train_state_bytes`, with history/metadata decoded. weights_only=True."""
    payload = _load(data, "cpu", TRAIN_STATE_FORMAT, "training state")
    payload["history"] = json.loads(payload["history"])
    payload["metadata"] = json.loads(payload["metadata"])
    return payload


def ema_checkpoint_bytes(state: dict) -> bytes:
    """The EMA weights of a training state as a model checkpoint (what gets registered)."""
    return _payload(_architecture(state), state["ema"], state["metadata"])
