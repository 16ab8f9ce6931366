"""The values column of a FEATURES row: a segment's [bins, frames] array stored as raw
little-endian bytes of the set's dtype (schemas/tables.py), and read back as float32."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import torch


def values_column(arrays: Sequence[np.ndarray], dtype: str) -> pa.Array:
    """Binary array of the arrays' bytes in `dtype` (row-major, little-endian). Refuses values
    that `dtype` cannot hold rather than storing infinities."""
    dt = np.dtype(dtype).newbyteorder("<")
    flat = np.concatenate([np.ravel(a) for a in arrays]).astype(np.float32, copy=False) if arrays \
        else np.zeros(0, np.float32)
    peak = float(max(flat.max(), -flat.min())) if flat.size else 0.0
    if not peak <= np.finfo(dt).max:  # NaN fails this too
        raise ValueError(f"feature values up to {peak:.4g} do not fit {dtype} (largest finite "
                         f"{np.finfo(dt).max:.4g}, or non-finite input): use FeatureConfig.dtype='float32'")
    # torch's cast, not numpy's: numpy converts float32 -> float16 without the CPU's vector
    # instructions (measured 6x slower on 36 MB)
    cast = flat if dt == np.float32 else torch.from_numpy(flat).to(getattr(torch, dt.name)).numpy()
    offsets = np.zeros(len(arrays) + 1, np.int64)
    np.cumsum([np.size(a) * dt.itemsize for a in arrays], out=offsets[1:])
    if offsets[-1] >= 2**31:  # Arrow's binary type has 32-bit offsets
        raise ValueError(f"{offsets[-1] / 2**30:.1f} GiB of feature values in one shard; a shard holds < 2 GiB "
                         "(about 40 audio-hours of log-mel in float16): split the clips shard")
    offsets = offsets.astype(np.int32)
    return pa.Array.from_buffers(pa.binary(), len(arrays), [None, pa.py_buffer(offsets), pa.py_buffer(cast)])


def decode_values(blob: bytes, dtype: str, num_bins: int, num_frames: int) -> np.ndarray:
    """One row's values as float32 [num_bins, num_frames]."""
    dt = np.dtype(dtype).newbyteorder("<")
    if len(blob) != num_bins * num_frames * dt.itemsize:
        raise ValueError(f"feature values of {len(blob)} bytes; expected {num_bins}x{num_frames} {dtype} "
                         f"({num_bins * num_frames * dt.itemsize} bytes)")
    return np.frombuffer(blob, dt).astype(np.float32).reshape(num_bins, num_frames)


def decode_values_column(table: pa.Table, column: str = "values") -> np.ndarray:
    """All rows' values as float32 [rows, bins, frames] (every row of one shape), without a
    Python object per row."""
    if table.num_rows == 0:
        return np.zeros((0, 0, 0), np.float32)
    bins, frames = (set(table.column(c).to_pylist()) for c in ("num_bins", "num_frames"))
    dtypes = set(table.column("values_dtype").to_pylist())
    if len(bins) != 1 or len(frames) != 1 or len(dtypes) != 1:
        raise ValueError(f"rows of mixed shapes {sorted(bins)}x{sorted(frames)} or dtypes {sorted(dtypes)}; "
                         "expected one shape and one dtype (one feature set)")
    col = table.column(column).combine_chunks()
    dt = np.dtype(dtypes.pop()).newbyteorder("<")
    offsets = np.frombuffer(col.buffers()[1], np.int32)[col.offset:col.offset + len(col) + 1]
    data = np.frombuffer(col.buffers()[2], np.uint8)[offsets[0]:offsets[-1]]
    n, b, f = len(col), bins.pop(), frames.pop()
    if data.size != n * b * f * dt.itemsize:
        raise ValueError(f"{n} feature rows hold {data.size} bytes; expected {b}x{f} {dt.name} each")
    return data.view(dt).astype(np.float32).reshape(n, b, f)
