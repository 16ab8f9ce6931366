"""Per-item noise (EDM's per-seed generators): each item draws from its own generator, seeded
from the run seed and the item's ID, so an output never depends on the batch it landed in."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch


def item_seed(run_seed: int, item_id: str, *salt: object) -> int:
    """A 63-bit seed from the run seed, the item's content ID and any salt (e.g. window index)."""
    key = "|".join([str(run_seed), item_id, *map(str, salt)])
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


class ItemNoise:
    """Callable noise source: `noise(like)` returns standard normal noise shaped like `like`,
    row b drawn from generator b. Successive calls continue each item's stream."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        self.seeds = list(seeds)
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in self.seeds]

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        if like.shape[0] != len(self.generators):
            raise ValueError(f"noise for a batch of {like.shape[0]} items, but {len(self.generators)} seeds")
        # Drawn in float32 whatever the batch dtype, so precision does not change the stream.
        rows = [torch.randn(like.shape[1:], generator=g, device=like.device, dtype=torch.float32)
                for g in self.generators]
        return torch.stack(rows).to(like.dtype)
