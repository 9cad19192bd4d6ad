"""Torch checkpoints (`pytorch_model.bin`, NVlabs `.pth`) read without torch, through an allow-list unpickler.

torch >= 1.6 writes a zip archive: `<name>/data.pkl` (the object tree, pickled) and one member `<name>/data/<key>`
per storage (raw bytes, little-endian unless `<name>/byteorder` says otherwise). The pickle names the functions
that rebuild tensors; we map those names to our own NumPy functions and refuse every other global, so nothing
from the file ever runs. Tensors come back as NumPy arrays; bfloat16 is widened to float32 exactly (NumPy has no
bfloat16: its bits are the top half of a float32).
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TorchPickleError

# ---------------------------------------------------------------------------------------------------------------
# Placeholders the unpickler builds; tensors stay lazy until the tree is walked, so unused storages are never read.


class StorageType:
    """What a `torch.<X>Storage` global stands for: a dtype, never a callable."""

    def __init__(self, torch_name: str, dtype: str):
        self.torch_name, self.dtype = torch_name, dtype  # dtype "bfloat16" is read as uint16 and widened

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize

    def __repr__(self) -> str:
        return f"torch.{self.torch_name}"


class _Storage:
    def __init__(self, key: str, stype: StorageType, numel: int):
        self.key, self.stype, self.numel = key, stype, numel


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride


class OpaqueObject:
    """Stands in for a global off the allow-list, and for anything built from one (only with `opaque=True`).

    It records the name and nothing else: calling, building or filling it never runs code from the file.
    """

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<opaque {self.name}>"


_DTYPES = {"Float": "float32", "Double": "float64", "Half": "float16", "BFloat16": "bfloat16", "Long": "int64",
           "Int": "int32", "Short": "int16", "Char": "int8", "Byte": "uint8", "Bool": "bool"}  # fmt: skip


class _TensorType:
    """What the globals torch.Tensor and torch.nn.Parameter stand for: a name, usable only as a type tag."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


_TENSOR_TYPES = (_TensorType("torch.Tensor"), _TensorType("torch.nn.parameter.Parameter"))


def _is_one_of(x: Any, options: tuple[Any, ...]) -> bool:
    return any(x is o for o in options)  # identity: `in` would call the __eq__ of whatever the pickle built


def _int(x: Any) -> bool:
    return type(x) is int  # bool is an int subclass; a size of True is a lie, not a 1


def _ints(xs: Any) -> bool:
    return type(xs) is tuple and all(_int(x) and x >= 0 for x in xs)


# ---------------------------------------------------------------------------------------------------------------
# Our stand-ins for the functions torch names in its pickles. Each checks its arguments' types.


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> _Tensor:
    """torch._utils._rebuild_tensor: a view (offset, sizes, strides in elements) of one storage."""
    if not isinstance(storage, _Storage):
        raise TorchPickleError(f"tensor rebuilt from {type(storage).__name__}, not from a storage")
    if not (_int(offset) and offset >= 0 and _ints(size) and _ints(stride) and len(size) == len(stride) <= 32):
        raise TorchPickleError(f"bad tensor layout: offset {offset!r}, size {size!r}, stride {stride!r}")
    return _Tensor(storage, offset, size, stride)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """torch._utils._rebuild_tensor_v2; `metadata` may only be empty (conj/neg bits are lazy ops we do not apply)."""
    if metadata and any(metadata.values() if isinstance(metadata, dict) else [True]):
        raise TorchPickleError(f"tensor metadata {metadata!r} (conjugate/negative views) is not supported")
    return _rebuild_tensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """torch._utils._rebuild_parameter(_with_state): a Parameter is its data; Python-side state is dropped."""
    if not isinstance(data, _Tensor):
        raise TorchPickleError(f"parameter rebuilt from {type(data).__name__}, not from a tensor")
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    """torch._tensor._rebuild_from_type_v2: only for plain tensors/parameters, with a rebuild function we own."""
    if not _is_one_of(func, (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_parameter)) or not _is_one_of(
        new_type, _TENSOR_TYPES
    ):
        raise TorchPickleError(f"refusing tensor subclass {new_type!r} rebuilt by {func!r}")
    if type(args) is not tuple:
        raise TorchPickleError("tensor rebuild arguments must be a tuple")
    return func(*args)


def _encode(text: Any, encoding: Any = "latin1") -> bytes:
    """_codecs.encode, which protocol-2 pickles use to carry bytes: only str -> latin-1 bytes."""
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        raise TorchPickleError(f"_codecs.encode is only allowed for latin-1 text, got {encoding!r}")
    return text.encode("latin1")


def _bytes() -> bytes:
    """builtins.bytes, which protocol 2 calls with no argument for b"" (and only so: bytes(n) would allocate n)."""
    return b""


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,  # the module's name before torch 1.9
    ("torch", "Tensor"): _TENSOR_TYPES[0],
    ("torch.nn.parameter", "Parameter"): _TENSOR_TYPES[1],
    ("collections", "OrderedDict"): OrderedDict,
    ("_codecs", "encode"): _encode,
    **{(m, "set"): set for m in ("builtins", "__builtin__")},  # protocol 2 writes Python 3's builtins as __builtin__
    **{(m, "frozenset"): frozenset for m in ("builtins", "__builtin__")},
    **{(m, "bytes"): _bytes for m in ("builtins", "__builtin__")},
    **{("torch", f"{k}Storage"): StorageType(f"{k}Storage", v) for k, v in _DTYPES.items()},
}
_CALLABLES = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_parameter, _rebuild_from_type_v2, _encode, _bytes,
              OrderedDict, set, frozenset)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# The unpickler: pickle's pure-Python one, with every opcode that can call or mutate an object re-checked.


class _Unpickler(pickle._Unpickler):  # the pure-Python class: its dispatch table can be overridden per opcode
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes, members: dict[str, zipfile.ZipInfo], prefix: str, opaque: bool):
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self.members, self.prefix, self.opaque = members, prefix, opaque
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        hit = _ALLOWED.get((module, name))
        if hit is not None:
            return hit
        if module == "torch" and name.endswith("Storage"):
            raise TorchPickleError(f"unsupported tensor dtype: torch.{name} (we read {', '.join(_DTYPES)})")
        if self.opaque:
            return OpaqueObject(f"{module}.{name}")
        raise TorchPickleError(
            f"refusing the global '{module}.{name}': a plain checkpoint holds only tensors, storages and containers "
            "(the file may be malicious)"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"):
            raise TorchPickleError(f"refusing the persistent id {str(pid)[:80]} (torch writes storage records only)")
        _, stype, key, _location, numel = pid  # location ("cpu", "cuda:0") is ignored: arrays live on the host
        if not isinstance(stype, StorageType):
            raise TorchPickleError(f"refusing storage type {stype!r}: it must be a torch.*Storage")
        if type(key) is not str or not key.isalnum() or not _int(numel) or numel < 0:
            raise TorchPickleError(f"bad storage record: key {key!r}, {numel!r} elements")
        seen = self.storages.get(key)
        if seen is not None:
            if (seen.stype, seen.numel) != (stype, numel):
                raise TorchPickleError(f"storage {key} declared twice with different dtype or size")
            return seen
        info = self.members.get(f"{self.prefix}/data/{key}")
        if info is None:
            raise TorchPickleError(f"storage {key} has no member {self.prefix}/data/{key} in the archive")
        if info.file_size != numel * stype.itemsize:
            raise TorchPickleError(
                f"storage {key}: the pickle declares {numel} x {stype!r} ({numel * stype.itemsize} bytes), "
                f"the archive member holds {info.file_size} bytes"
            )
        self.storages[key] = _Storage(key, stype, numel)
        return self.storages[key]

    def _refuse(self, what: str) -> None:
        raise TorchPickleError(f"refusing {what}")

    def _reduce(self) -> None:
        args, func = self.stack.pop(), self.stack[-1]
        if self.opaque and isinstance(func, OpaqueObject):
            self.stack[-1] = OpaqueObject(func.name)
        elif _is_one_of(func, _CALLABLES) and type(args) is tuple:
            self.stack[-1] = func(*args)
        else:
            self._refuse(f"a call of {func!r:.80}")

    def _new(self, cls: Any) -> None:
        if not isinstance(cls, OpaqueObject):  # cls.__new__ of anything real would run the file's choice of code
            self._refuse(f"creating an instance of {cls!r:.80}")
        self.append(OpaqueObject(cls.name))

    def _newobj(self) -> None:
        self.stack.pop()  # args
        self._new(self.stack.pop())

    def _newobj_ex(self) -> None:
        self.stack.pop(), self.stack.pop()  # kwargs, args
        self._new(self.stack.pop())

    def _build(self) -> None:
        state, inst = self.stack.pop(), self.stack[-1]
        if isinstance(inst, OpaqueObject):
            return  # its state is never applied: nothing to run it on
        if type(inst) is OrderedDict and type(state) is dict:
            return  # torch's state dicts carry a `_metadata` attribute (module versions); we drop it
        self._refuse(f"setting the state of a {type(inst).__name__} from a {type(state).__name__} (BUILD)")

    def _target(self, kinds: tuple[type, ...], opcode: str) -> Any:
        """The container an APPEND/SETITEM-style opcode fills: only plain ones (None: an opaque one, skipped)."""
        target = self.stack[-1]
        if isinstance(target, OpaqueObject):
            return None
        if type(target) not in kinds:
            self._refuse(f"{opcode} on a {type(target).__name__}")
        return target

    def _append(self) -> None:
        value = self.stack.pop()
        if (target := self._target((list,), "APPEND")) is not None:
            target.append(value)

    def _appends(self) -> None:
        items = self.pop_mark()
        if (target := self._target((list,), "APPENDS")) is not None:
            target.extend(items)

    def _setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        if (target := self._target((dict, OrderedDict), "SETITEM")) is not None:
            target[key] = value

    def _setitems(self) -> None:
        items = self.pop_mark()
        if (target := self._target((dict, OrderedDict), "SETITEMS")) is not None:
            for i in range(0, len(items) - 1, 2):
                target[items[i]] = items[i + 1]

    def _additems(self) -> None:
        items = self.pop_mark()
        if (target := self._target((set,), "ADDITEMS")) is not None:
            target.update(items)

    def _inst(self) -> None:
        self._refuse("protocol 0/1 class instantiation (INST/OBJ), which torch never writes")

    def _persid(self) -> None:
        self._refuse("a text persistent id (PERSID), which torch never writes")

    def _bytearray8(self) -> None:
        self._refuse("a protocol-5 bytearray (BYTEARRAY8): pickle would allocate its claimed size before reading")

    dispatch[pickle.REDUCE[0]] = _reduce
    dispatch[pickle.NEWOBJ[0]] = _newobj
    dispatch[pickle.NEWOBJ_EX[0]] = _newobj_ex
    dispatch[pickle.BUILD[0]] = _build
    dispatch[pickle.APPEND[0]] = _append
    dispatch[pickle.APPENDS[0]] = _appends
    dispatch[pickle.SETITEM[0]] = _setitem
    dispatch[pickle.SETITEMS[0]] = _setitems
    dispatch[pickle.ADDITEMS[0]] = _additems
    dispatch[pickle.INST[0]] = _inst
    dispatch[pickle.OBJ[0]] = _inst
    dispatch[pickle.PERSID[0]] = _persid
    dispatch[pickle.BYTEARRAY8[0]] = _bytearray8


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


def _tensor_array(t: _Tensor, storage: np.ndarray) -> np.ndarray:
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
    if not isinstance(obj, _Tensor | dict | list | tuple):
        return obj
    if id(obj) in done:
        return done[id(obj)]
    if depth > 64:
        raise TorchPickleError("objects nested more than 64 deep: not a checkpoint")
    if isinstance(obj, _Tensor):
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
            unpickler = _Unpickler(data, members, prefix, opaque)
            obj = unpickler.load()
            if select is not None:
                if not isinstance(obj, dict) or select not in obj:
                    keys = list(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
                    raise TorchPickleError(f"no top-level entry {select!r} (found {keys})")
                obj = obj[select]
            arrays: dict[str, np.ndarray] = {}
            archive_bytes = path.stat().st_size

            def load(storage: _Storage) -> np.ndarray:
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
