"""The interface every FAD embedding implements (tasks/builders.make_embedding builds one by name)."""
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
