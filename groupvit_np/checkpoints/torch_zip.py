"""Torch checkpoints (`pytorch_model.bin`, NVlabs `.pth`) read without torch, through an allow-list unpickler.

torch >= 1.6 writes a zip archive: `<name>/data.pkl` (the object tree, pickled) and one member `<name>/data/<key>`
per storage (raw bytes, little-endian unless `<name>/byteorder` says otherwise). The pickle names the functions
that rebuild tensors; we map those names to our own NumPy functions and refuse every other global
(`torch_allowlist`, `torch_unpickler`), so nothing from the file ever runs. Tensors come back as NumPy arrays;
bfloat16 is widened to float32 exactly (NumPy has no bfloat16: its bits are the top half of a float32).
"""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TorchPickleError
from .torch_allowlist import LazyStorage, LazyTensor, StorageType
from .torch_unpickler import Unpickler

# ---------------------------------------------------------------------------------------------------------------
# The archive: find the pickle, read each storage once, turn lazy tensors into arrays.

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # protocol 2 + torch's magic long
_MAX_PICKLE_BYTES = 1 << 28  # data.pkl holds structure, not tensor data (~30 KB for GroupViT): 256 MiB is a bomb
_CHUNK = 1 << 22  # storages are copied into their final buffer 4 MiB at a time: peak memory stays one copy


# What a damaged or hostile file raises from inside zipfile, pickle or our checks, turned into one clear error
# (zipfile also raises NotImplementedError for odd compression flags, RuntimeError for "encrypted" members and
# OSError for seeks before the start; RuntimeError covers RecursionError too).
# fmt: off
_CORRUPT = (pickle.UnpicklingError, zipfile.BadZipFile, zlib.error, EOFError, ValueError, TypeError, KeyError,
            IndexError, AttributeError, struct.error, RuntimeError, UnicodeDecodeError, OverflowError,
            NotImplementedError, OSError)
# fmt: on


def _archive_prefix(members: dict[str, zipfile.ZipInfo]) -> str:
    """The archive's top folder: torch 2.x names it after the file (`pytorch_model/`), older ones `archive/`."""
    pickles = [name for name in members if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise TorchPickleError(f"expected one <folder>/data.pkl in the archive, found {len(pickles)}")
    return pickles[0].split("/")[0]


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, nbytes: int, archive_bytes: int) -> bytearray:
    """Exactly `nbytes` bytes of one member into one writable buffer (zipfile checks the CRC at its end)."""
    stored = info.compress_type == zipfile.ZIP_STORED
    if info.compress_size > archive_bytes or info.file_size > (
        info.compress_size if stored else 1100 * info.compress_size
    ):
        raise TorchPickleError(f"member {info.filename} claims {info.file_size} bytes, more than the archive holds")
    buf = bytearray(nbytes)
    view = memoryview(buf)
    with zf.open(info) as f:
        pos = 0
        while pos < nbytes:
            chunk = f.read(min(_CHUNK, nbytes - pos))
            if not chunk:
                raise TorchPickleError(f"member {info.filename} is truncated: {pos} of {nbytes} bytes")
            view[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
        if f.read(1):
            raise TorchPickleError(f"member {info.filename} is longer than its {nbytes} declared bytes")
    return buf


def _storage_array(buf: bytearray, stype: StorageType, byteorder: str) -> np.ndarray:
    """Raw storage bytes -> a 1-D native-order array; bfloat16 widened to float32 (exact: bits << 16)."""
    dtype = np.dtype("uint16" if stype.dtype == "bfloat16" else stype.dtype).newbyteorder(byteorder)
    arr = np.frombuffer(buf, dtype=dtype)  # [numel], no copy: the bytearray is the array's memory
    if not dtype.isnative:
        arr = arr.byteswap(inplace=True).view(dtype.newbyteorder("="))
    if stype.dtype == "bfloat16":
        wide = arr.astype(np.uint32)
        wide <<= 16
        arr = wide.view(np.float32)
    return arr


def _row_major(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """True when the strides are C order's for this shape (any stride is fine along a dimension of size 1)."""
    expected = 1
    for size, step in zip(reversed(shape), reversed(stride), strict=True):
        if size != 1 and step != expected:
            return False
        expected *= size
    return True


def _tensor_array(t: LazyTensor, storage: np.ndarray) -> np.ndarray:
    """A tensor's view of its storage: checked to lie inside it; a copy only when the layout is not contiguous."""
    shape, stride, n = t.shape, t.stride, storage.shape[0]
    count = int(np.prod(shape, dtype=object))
    if count == 0:
        return np.zeros(shape, dtype=storage.dtype)
    last = t.offset + sum((size - 1) * step for size, step in zip(shape, stride, strict=True))
    if last >= n:
        raise TorchPickleError(
            f"tensor of shape {shape} at offset {t.offset} with strides {stride} reaches element {last}, "
            f"but storage {t.storage.key} holds {n}"
        )
    if _row_major(shape, stride):
        return storage[t.offset : t.offset + count].reshape(shape)  # a view: tied tensors keep sharing memory
    if count > n:  # stride-0 (expanded) or overlapping views would make a copy bigger than the file
        raise TorchPickleError(
            f"tensor of shape {shape} with strides {stride} would expand storage {t.storage.key} ({n} elements) "
            f"to {count}: stride-0 and overlapping views are not supported"
        )
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[t.offset :], shape, tuple(s * itemsize for s in stride), writeable=False
    )  # in bounds: checked above
    return np.ascontiguousarray(view)


def _materialize(obj: Any, load: Any, done: dict[int, Any], depth: int = 0) -> Any:
    """Replace every lazy tensor inside `obj` with its array (in place for lists and dicts).

    `done` maps each container or tensor already visited to its result, so shared references stay shared and a
    pickle whose tuples reference each other twice per level (2^n paths) costs n steps, not 2^n.
    """
    if not isinstance(obj, LazyTensor | dict | list | tuple):
        return obj
    if id(obj) in done:
        return done[id(obj)]
    if depth > 64:
        raise TorchPickleError("objects nested more than 64 deep: not a checkpoint")
    if isinstance(obj, LazyTensor):
        done[id(obj)] = _tensor_array(obj, load(obj.storage))
    elif isinstance(obj, dict):
        done[id(obj)] = obj
        for key, value in obj.items():
            obj[key] = _materialize(value, load, done, depth + 1)
    elif isinstance(obj, list):
        done[id(obj)] = obj
        obj[:] = [_materialize(value, load, done, depth + 1) for value in obj]
    else:
        done[id(obj)] = tuple(_materialize(value, load, done, depth + 1) for value in obj)
    return done[id(obj)]


def _check_magic(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
    if head.startswith(_ZIP_MAGIC):
        return
    if head == _LEGACY_MAGIC or head[:1] == b"\x80":
        raise TorchPickleError(
            f"{path}: legacy torch format (saved before torch 1.6, or with _use_new_zipfile_serialization=False), "
            "which we do not read; re-save it with a recent torch (torch.save(torch.load(f), g)) or as safetensors"
        )
    raise TorchPickleError(f"{path}: not a torch checkpoint (starts with {head[:4]!r}, not a zip archive)")


def load_torch_file(
    path: str | os.PathLike, *, map_location: Any = None, select: str | None = None, opaque: bool = False
) -> Any:
    """The object tree of a torch (>= 1.6, zip) file, tensors as NumPy arrays; nothing in the file is executed.

    `select`: return only the top-level entry `obj[select]`, reading only its tensors (NVlabs' `model`).
    `opaque`: globals off the allow-list become inert `OpaqueObject`s instead of errors (NVlabs files carry their
    training config as a pickled object we never use). `map_location` exists for torch.load's signature: arrays
    always live on the host, so only None and "cpu" are accepted.
    """
    if map_location not in (None, "cpu"):
        raise ValueError(f"map_location={map_location!r}: groupvit_np reads torch files into host NumPy arrays")
    path = Path(path)
    _check_magic(path)
    try:
        with zipfile.ZipFile(path) as zf:
            members = {info.filename: info for info in zf.infolist()}
            prefix = _archive_prefix(members)
            byteorder = "little"
            if f"{prefix}/byteorder" in members:
                byteorder = zf.read(f"{prefix}/byteorder").decode("ascii", "replace")
                if byteorder not in ("little", "big"):
                    raise TorchPickleError(f"unknown byteorder record {byteorder!r}")
            with zf.open(members[f"{prefix}/data.pkl"]) as f:
                data = f.read(_MAX_PICKLE_BYTES + 1)
            if len(data) > _MAX_PICKLE_BYTES:
                raise TorchPickleError("data.pkl is larger than 256 MiB: not a checkpoint")
            unpickler = Unpickler(data, members, prefix, opaque)
            obj = unpickler.load()
            if select is not None:
                if not isinstance(obj, dict) or select not in obj:
                    keys = list(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
                    raise TorchPickleError(f"no top-level entry {select!r} (found {keys})")
                obj = obj[select]
            arrays: dict[str, np.ndarray] = {}
            archive_bytes = path.stat().st_size

            def load(storage: LazyStorage) -> np.ndarray:
                if storage.key not in arrays:
                    info = members[f"{prefix}/data/{storage.key}"]
                    buf = _read_member(zf, info, storage.numel * storage.stype.itemsize, archive_bytes)
                    arrays[storage.key] = _storage_array(buf, storage.stype, byteorder)
                return arrays[storage.key]

            return _materialize(obj, load, {})
    except TorchPickleError as err:
        raise TorchPickleError(f"{path}: {err}") from None
    except _CORRUPT as err:
        raise TorchPickleError(f"{path}: corrupt or unreadable torch file ({type(err).__name__}: {err})") from None
