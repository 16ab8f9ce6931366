"""Feature rows -> training tensors: normalised with the feature set's train statistics and
sorted by feature ID, so a row's index (and hence every seeded draw) never depends on the order
in which shards or Ray blocks arrived."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def segments_tensor(feature_ids: Sequence[str], values: Sequence[np.ndarray], num_bins: Sequence[int],
                    num_frames: Sequence[int], num_valid_frames: Sequence[int],
                    mean: np.ndarray, std: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(segments [N, bins, frames] float32 normalised, valid frames [N], sorted feature IDs)."""
    if not len(feature_ids):
        raise ValueError("no feature rows matched (domain, role, split): nothing to train or validate on")
    order = np.argsort(np.asarray(feature_ids))
    bins, frames = int(num_bins[0]), int(num_frames[0])
    x = np.empty((len(order), bins, frames), np.float32)
    for j, i in enumerate(order):
        if int(num_bins[i]) != bins or int(num_frames[i]) != frames:
            raise ValueError(f"feature {feature_ids[i]} is {num_bins[i]}x{num_frames[i]}; "
                             f"expected {bins}x{frames} like the others")
        x[j] = np.asarray(values[i], np.float32).reshape(bins, frames)
    x = (x - mean[None, :, None]) / std[None, :, None]
    valid = torch.as_tensor(np.asarray(num_valid_frames)[order].astype(np.int64))
    return torch.from_numpy(x), valid, [feature_ids[i] for i in order]


def denormalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Model space -> natural-log mel: the inverse of the normalisation above, [..., bins, frames]."""
    m = torch.as_tensor(mean, dtype=x.dtype)[:, None]
    s = torch.as_tensor(std, dtype=x.dtype)[:, None]
    return x * s + m


def normalise(logmel: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=logmel.dtype)[:, None]
    s = torch.as_tensor(std, dtype=logmel.dtype)[:, None]
    return (logmel - m) / s
