"""Reading a feature set back for training: torch tensors, normalised with the statistics
stored in the feature set's manifest."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from infra.datasets import ShardedDataset
from tasks.features import total_stats
from tasks.feature_values import decode_values


def normalisation(url: str, role: str, domain: str | tuple[str, ...] | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin (mean, std) over the train split of `role` (and `domain`, or any of several
    domains pooled, else all domains)."""
    stats = total_stats(ShardedDataset.at(url, "features").manifest().extra.get("stats", {}))
    domains = None if domain is None else {domain} if isinstance(domain, str) else set(domain)
    keys = [k for k in stats if k.split("/", 1)[0] == role and (domains is None or k.split("/", 1)[1] in domains)]
    if not keys:
        raise ValueError(f"{url} has no train statistics for role={role!r} domain={domain!r}; "
                         f"it has {sorted(stats)}")
    acc = stats[keys[0]]
    for k in keys[1:]:
        acc.merge(stats[k])
    d = acc.to_dict()
    return np.array(d["mean"], np.float32), np.maximum(np.array(d["std"], np.float32), 1e-3)


def iter_feature_batches(url: str, batch_size: int, *, split: str | None = "train", role: str = "clean",
                         domain: str | None = None, normalise: bool = True,
                         shuffle_seed: int | None = None) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """Batches ([B, bins, frames] float32, feature IDs). Shuffles shard order and rows within
    a shard when `shuffle_seed` is given (shard-level shuffle keeps memory to one shard)."""
    ds = ShardedDataset.at(url, "features")
    shards = list(ds.manifest().shards)
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    if rng is not None:
        rng.shuffle(shards)
    mean, std = normalisation(url, role, domain) if normalise else (None, None)
    pending: list[np.ndarray] = []
    ids: list[str] = []
    for entry in shards:
        t = ds.read_shard(entry).to_pylist()
        rows = [r for r in t if r["role"] == role and (split is None or r["split"] == split)
                and (domain is None or r["domain"] == domain)]
        if rng is not None:
            rng.shuffle(rows)
        for r in rows:
            x = decode_values(r["values"], r["values_dtype"], r["num_bins"], r["num_frames"])
            if mean is not None:
                x = (x - mean[:, None]) / std[:, None]
            pending.append(x)
            ids.append(r["feature_id"])
            if len(pending) == batch_size:
                yield torch.from_numpy(np.stack(pending)), ids
                pending, ids = [], []
    if pending:
        yield torch.from_numpy(np.stack(pending)), ids
