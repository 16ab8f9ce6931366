"""Self-describing model checkpoints: the bytes carry the model's config (U-Net + EDM) and any
metadata (the model card, the training run), so loading never guesses shapes. Serialisation
only: turning a checkpoint back into a module is the builders' job (tasks/builders.py).
Reading uses torch.load(weights_only=True): a checkpoint cannot execute code."""
from __future__ import annotations

import io
import json

import torch

from schemas.diffusion import ModelConfig

CHECKPOINT_FORMAT = "reinstrument.checkpoint"
CHECKPOINT_VERSION = 1
TRAIN_STATE_FORMAT = "reinstrument.train_state"


def _payload(model_config: str, state_dict: dict, metadata: dict) -> bytes:
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_config": model_config,
               "metadata": json.dumps(metadata),
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}}
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def checkpoint_bytes(model: torch.nn.Module, metadata: dict | None = None) -> bytes:
    cfg = ModelConfig(unet=model.net.cfg, edm=model.cfg)
    return _payload(cfg.model_dump_json(), model.state_dict(), metadata or {})


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


def read_checkpoint(data: bytes, device: str | torch.device = "cpu") -> tuple[ModelConfig, dict, dict]:
    """(model config, state dict, metadata). Raises ValueError on anything but our format."""
    payload = _load(data, device, CHECKPOINT_FORMAT, "checkpoint")
    return ModelConfig.model_validate_json(payload["model_config"]), payload["state_dict"], json.loads(payload["metadata"])


def train_state_bytes(model: torch.nn.Module, ema: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                      history: dict, metadata: dict) -> bytes:
    """Everything a resumed run needs: weights, EMA, optimizer moments, the step reached, the
    metric history so far (for the loss curve) and the model's metadata (the model card)."""
    payload = {"format": TRAIN_STATE_FORMAT, "version": CHECKPOINT_VERSION, "step": int(step),
               "model_config": ModelConfig(unet=model.net.cfg, edm=model.cfg).model_dump_json(),
               "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
               "history": json.dumps(history), "metadata": json.dumps(metadata)}
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
    return _payload(state["model_config"], state["ema"], state["metadata"])
