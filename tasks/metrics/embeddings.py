"""The interface every FAD embedding implements, and the registry the CLI and flows use."""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Embedding(Protocol):
    name: str             # recorded in every metrics row: FAD values are only comparable per embedding
    sample_rate_hz: int   # the rate the network was trained at; `embed` resamples to it
    min_seconds: float    # shorter audio yields no embedding (one patch/example needs this much)

    def embed(self, audio: np.ndarray, sample_rate_hz: int) -> np.ndarray:
        """Mono float audio -> [frames or patches, d] float32 embeddings."""
        ...


EMBEDDINGS = ("musicnn", "musicnn-mtt", "vggish")


def make_embedding(name: str, weights_dir: str, vggish_weights: str | None = None) -> Embedding:
    from tasks.metrics import musicnn, vggish

    if name in ("musicnn", "musicnn-msd"):
        return musicnn.Musicnn("MSD_musicnn", weights_dir)
    if name == "musicnn-mtt":
        return musicnn.Musicnn("MTT_musicnn", weights_dir)
    if name == "vggish":
        if not vggish_weights:
            raise ValueError("the vggish embedding needs a weights file: pass --vggish-weights PATH "
                             "(a torchvggish-style state dict; see README 'Metrics')")
        return vggish.VGGish.from_file(vggish_weights)
    raise ValueError(f"unknown embedding {name!r}; expected one of {EMBEDDINGS}")
