"""The safetensors format by hand: a validating zero-copy reader and a writer with bfloat16.

A file is an 8-byte little-endian header length, a JSON header (name -> dtype, shape, byte range) and the raw
little-endian data. Our reader maps the file once and returns views (the `safetensors` package's NumPy reader
copies every tensor); our writer streams one tensor at a time and writes bfloat16, which that package's NumPy
writer cannot.
"""

from __future__ import annotations

import json
import math
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError

# ---------------------------------------------------------------------------------------------------------------
# Reading.

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U8": "u1", "BOOL": "?"}  # fmt: skip
_MAX_HEADER = 100 << 20


def _widen_bfloat16(raw: np.ndarray) -> np.ndarray:
    """bfloat16 is the top half of a float32: shift the 16 stored bits up.  # uint16 [...] -> float32 [...]"""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a .safetensors file as read-only NumPy views into one memory map (bfloat16 widened).

    Zero-copy: a float32 checkpoint computed in float32 costs one file-backed copy of the weights, shared with the
    page cache. The header is checked before any data is touched: known dtypes, sizes that match shapes, offsets
    inside the file and no overlaps, so a truncated or lying file fails with a clear error instead of a crash.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < n <= min(size - 8, _MAX_HEADER):
                raise CheckpointError(f"{path}: not a safetensors file (bad header length {n} for {size} bytes)")
            header = json.loads(f.read(n))
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 8 + n else b""
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    out, spans, data_start = {}, [], 8 + n
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = _DTYPES[entry["dtype"]], tuple(entry["shape"]), entry["data_offsets"]
            count = math.prod(shape)
            ok = all(isinstance(d, int) and d >= 0 for d in shape) and 0 <= begin <= end
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: bad header entry for {name!r}: {entry!r}") from err
        if not ok or end - begin != count * np.dtype(dtype).itemsize or data_start + end > size:
            raise CheckpointError(
                f"{path}: tensor {name!r} ({entry['dtype']}, shape {list(shape)}) does not fit its byte range "
                f"[{begin}, {end}) in a {size - data_start}-byte data section (truncated or corrupt file?)"
            )
        spans.append((begin, end, name))
        view = np.frombuffer(mapped, dtype=dtype, count=count, offset=data_start + begin).reshape(shape)
        out[name] = _widen_bfloat16(view) if entry["dtype"] == "BF16" else view
    spans.sort()
    for (_, end_a, a), (begin_b, _, b) in zip(spans, spans[1:], strict=False):
        if begin_b < end_a:
            raise CheckpointError(f"{path}: tensors {a!r} and {b!r} overlap in the file")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Writing.

_ST_CODES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
             "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}  # fmt: skip


def to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even as torch does; every NaN -> 0x7FC0."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)  # wraps only for NaN payloads
    return np.where(np.isnan(bits.view(np.float32)), np.uint16(0x7FC0), rounded)


def _stored_dtype(src: np.dtype, dtype: str) -> str:
    """The dtype a tensor is written in: floats in the requested one, integers and booleans as they are."""
    return dtype if src.kind == "f" else src.name


def _encoded(value: np.ndarray, stored: str) -> np.ndarray:
    """The little-endian, C-contiguous bytes-to-be of one tensor (bfloat16 as its uint16 bit patterns)."""
    value = np.asarray(value)
    if stored == "bfloat16":
        return to_bfloat16_bits(value).astype("<u2", copy=False)
    return np.ascontiguousarray(value.astype(np.dtype(stored).newbyteorder("<"), copy=False))


def write_safetensors(path: str | os.PathLike, state: dict[str, np.ndarray], dtype: str = "float32") -> None:
    """Write `state` as one safetensors file, one tensor at a time (peak memory: the largest tensor, once more).

    Layout: 8-byte little-endian header length, JSON header (name -> dtype, shape, byte range), padded with spaces
    to 8 bytes, then the data. Wider dtypes first, so every tensor starts aligned to its item size.
    """
    stored = {k: _stored_dtype(np.asarray(v).dtype, dtype) for k, v in state.items()}
    for name, kind in stored.items():
        if kind not in _ST_CODES:
            raise CheckpointError(f"cannot write {name} (dtype {kind}) to safetensors")
    size = {k: 2 if kind == "bfloat16" else np.dtype(kind).itemsize for k, kind in stored.items()}
    names = sorted(state, key=lambda k: (-size[k], k))
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}  # transformers refuses files without format "pt"
    offset = 0
    for name in names:
        end = offset + int(np.asarray(state[name]).size) * size[name]
        header[name] = {"dtype": _ST_CODES[stored[name]], "shape": list(np.shape(state[name])),
                        "data_offsets": [offset, end]}  # fmt: skip
        offset = end
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for name in names:
            f.write(_encoded(state[name], stored[name]))  # C-contiguous: written straight from its buffer
        f.flush()
        os.fsync(f.fileno())
