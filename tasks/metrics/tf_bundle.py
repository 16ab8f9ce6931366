"""Read a TensorFlow checkpoint ("tensor bundle": `<prefix>.index` + `<prefix>.data-*`) with
numpy alone, so the musicnn weights load without TensorFlow.

The .index is a LevelDB SSTable (uncompressed blocks of prefix-compressed key/value entries,
an index block, a 48-byte footer ending in a magic number) mapping each tensor name to a
BundleEntryProto (dtype, shape, shard, offset, size); the data files hold the raw
little-endian tensors. Formats: tensorflow/core/util/tensor_bundle/tensor_bundle.proto and
leveldb's doc/table_format.md."""
from __future__ import annotations

import os
import struct

import numpy as np

_MAGIC = 0xDB4775248B80FB57
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 10: np.bool_, 19: np.float16}


class BundleError(ValueError):
    """The file is not a readable TensorFlow tensor bundle."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise BundleError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of a protobuf message; nested messages stay bytes."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise BundleError(f"unsupported protobuf wire type {wire}")
        out.append((field, value))
    return out


def _block(data: bytes, handle: bytes) -> bytes:
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if data[offset + size] != 0:  # the 1-byte trailer names the compression; TF writes none
        raise BundleError(f"compressed SSTable block (type {data[offset + size]}) is not supported")
    return data[offset:offset + size]


def _entries(block: bytes) -> list[tuple[bytes, bytes]]:
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 * (num_restarts + 1)
    out, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        out.append((key, block[pos:pos + value_len]))
        pos += value_len
    return out


def read_bundle(prefix: str) -> dict[str, np.ndarray]:
    """All numeric tensors of the checkpoint at `prefix` (path without .index), by name."""
    index_path = prefix + ".index"
    try:
        with open(index_path, "rb") as f:
            index = f.read()
    except FileNotFoundError:
        raise BundleError(f"no checkpoint index at {index_path}") from None
    if len(index) < 48 or struct.unpack_from("<Q", index, len(index) - 8)[0] != _MAGIC:
        raise BundleError(f"{index_path} is not an SSTable (bad footer magic)")
    footer = index[-48:]
    _, pos = _varint(footer, 0)  # the metaindex handle (offset, size) is not needed
    _, start = _varint(footer, pos)
    _, end = _varint(footer, start)
    _, end = _varint(footer, end)
    index_block = footer[start:end]
    entries = [e for _, handle in _entries(_block(index, index_block)) for e in _entries(_block(index, handle))]
    shards: dict[int, bytes] = {}
    tensors: dict[str, np.ndarray] = {}
    for key, value in entries:
        if key == b"":  # the BundleHeaderProto: num_shards, endianness, version
            header = dict(_proto_fields(value))
            if header.get(2, 0) != 0:
                raise BundleError("big-endian tensor bundles are not supported")
            num_shards = header.get(1, 1)
            continue
        f = dict(_proto_fields(value))
        dtype = _DTYPES.get(f.get(1, 0))
        if dtype is None:
            continue  # strings and other non-numeric tensors (e.g. the optimizer's bookkeeping)
        shape = [dict(_proto_fields(d)).get(1, 0) for k, d in _proto_fields(f.get(2, b"")) if k == 2]
        shard, offset, size = f.get(3, 0), f.get(4, 0), f.get(5, 0)
        if shard not in shards:
            path = f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"
            if not os.path.exists(path):
                raise BundleError(f"checkpoint data shard missing: {path}")
            with open(path, "rb") as fh:
                shards[shard] = fh.read()
        count = int(np.prod(shape)) if shape else 1
        if size != count * np.dtype(dtype).itemsize or offset + size > len(shards[shard]):
            raise BundleError(f"tensor {key.decode()!r}: {size} bytes at {offset} do not hold shape {shape}")
        tensors[key.decode()] = np.frombuffer(shards[shard], dtype=np.dtype(dtype).newbyteorder("<"),
                                              count=count, offset=offset).reshape(shape).copy()
    return tensors
