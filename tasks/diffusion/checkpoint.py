"""Self-describing model checkpoints: the bytes carry the model's config (U-Net + EDM) and any
metadata (feature normalisation, training run), so loading never guesses shapes. Loading uses
torch.load(weights_only=True): a checkpoint cannot execute code."""
from __future__ import annotations

import io
import json

import torch

from schemas.configs import StrictConfig
from schemas.diffusion import EDMConfig, UNetConfig
from tasks.diffusion.precond import EDMPrecond
from tasks.diffusion.unet import UNet

CHECKPOINT_FORMAT = "reinstrument.checkpoint"
CHECKPOINT_VERSION = 1


class ModelConfig(StrictConfig):
    unet: UNetConfig
    edm: EDMConfig = EDMConfig()


def build_model(cfg: ModelConfig) -> EDMPrecond:
    return EDMPrecond(UNet(cfg.unet), cfg.edm)


def checkpoint_bytes(model: EDMPrecond, metadata: dict | None = None) -> bytes:
    cfg = ModelConfig(unet=model.net.cfg, edm=model.cfg)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
               "model_config": cfg.model_dump_json(), "metadata": json.dumps(metadata or {}),
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}}
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def load_checkpoint_bytes(data: bytes, device: str | torch.device = "cpu") -> tuple[EDMPrecond, dict]:
    """(model in eval mode, metadata). Raises ValueError on anything but our format."""
    try:
        payload = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except Exception as e:  # a truncated or foreign file: say so instead of a pickle traceback
        raise ValueError(f"not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not a {CHECKPOINT_FORMAT} file")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint version {payload.get('version')}; this code reads {CHECKPOINT_VERSION}")
    model = build_model(ModelConfig.model_validate_json(payload["model_config"])).to(device)
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.eval(), json.loads(payload["metadata"])


TRAIN_STATE_FORMAT = "reinstrument.train_state"


def train_state_bytes(model: EDMPrecond, ema: EDMPrecond, optimizer: torch.optim.Optimizer, step: int,
                      history: dict, metadata: dict) -> bytes:
    """Everything a resumed run needs: weights, EMA, optimizer moments, the step reached, the
    metric history so far (for the loss curve) and the model's metadata (normalisation)."""
    payload = {"format": TRAIN_STATE_FORMAT, "version": CHECKPOINT_VERSION, "step": int(step),
               "model_config": ModelConfig(unet=model.net.cfg, edm=model.cfg).model_dump_json(),
               "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
               "history": json.dumps(history), "metadata": json.dumps(metadata)}
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def load_train_state(data: bytes) -> dict:
    """The payload of `train_state_bytes`, with history/metadata decoded. weights_only=True."""
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"not a readable training state ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or payload.get("format") != TRAIN_STATE_FORMAT:
        raise ValueError(f"not a {TRAIN_STATE_FORMAT} file")
    payload["history"] = json.loads(payload["history"])
    payload["metadata"] = json.loads(payload["metadata"])
    return payload


def ema_checkpoint_bytes(state: dict) -> bytes:
    """The EMA weights of a training state as a model checkpoint (what gets registered)."""
    model = build_model(ModelConfig.model_validate_json(state["model_config"]))
    model.load_state_dict(state["ema"])
    return checkpoint_bytes(model, state["metadata"])
