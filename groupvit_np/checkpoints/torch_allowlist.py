"""What a torch pickle may name, and what each name becomes. Nothing named in a file ever runs.

A checkpoint's pickle names the functions that rebuild tensors (`torch._utils._rebuild_tensor_v2`), storage types
(`torch.FloatStorage`) and a few containers. `ALLOWED` maps each such name to a placeholder (a storage type, a tensor
type tag) or to our own stand-in, which checks its arguments' types and builds a lazy tensor: a view of a storage,
read only when the object tree is walked (`torch_zip`). `CALLABLES` are the only objects the unpickler may call.
"""

from __future__ import annotations

from collections import OrderedDict
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


class LazyStorage:
    def __init__(self, key: str, stype: StorageType, numel: int):
        self.key, self.stype, self.numel = key, stype, numel


class LazyTensor:
    def __init__(self, storage: LazyStorage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]):
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


DTYPES = {"Float": "float32", "Double": "float64", "Half": "float16", "BFloat16": "bfloat16", "Long": "int64",
          "Int": "int32", "Short": "int16", "Char": "int8", "Byte": "uint8", "Bool": "bool"}  # fmt: skip


class _TensorType:
    """What the globals torch.Tensor and torch.nn.Parameter stand for: a name, usable only as a type tag."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


_TENSOR_TYPES = (_TensorType("torch.Tensor"), _TensorType("torch.nn.parameter.Parameter"))


def is_one_of(x: Any, options: tuple[Any, ...]) -> bool:
    return any(x is o for o in options)  # identity: `in` would call the __eq__ of whatever the pickle built


def is_int(x: Any) -> bool:
    return type(x) is int  # bool is an int subclass; a size of True is a lie, not a 1


def is_sizes(xs: Any) -> bool:
    return type(xs) is tuple and all(is_int(x) and x >= 0 for x in xs)


# ---------------------------------------------------------------------------------------------------------------
# Our stand-ins for the functions torch names in its pickles. Each checks its arguments' types.


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> LazyTensor:
    """torch._utils._rebuild_tensor: a view (offset, sizes, strides in elements) of one storage."""
    if not isinstance(storage, LazyStorage):
        raise TorchPickleError(f"tensor rebuilt from {type(storage).__name__}, not from a storage")
    if not (is_int(offset) and offset >= 0 and is_sizes(size) and is_sizes(stride) and len(size) == len(stride) <= 32):
        raise TorchPickleError(f"bad tensor layout: offset {offset!r}, size {size!r}, stride {stride!r}")
    return LazyTensor(storage, offset, size, stride)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """torch._utils._rebuild_tensor_v2; `metadata` may only be empty (conj/neg bits are lazy ops we do not apply)."""
    if metadata and any(metadata.values() if isinstance(metadata, dict) else [True]):
        raise TorchPickleError(f"tensor metadata {metadata!r} (conjugate/negative views) is not supported")
    return _rebuild_tensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """torch._utils._rebuild_parameter(_with_state): a Parameter is its data; Python-side state is dropped."""
    if not isinstance(data, LazyTensor):
        raise TorchPickleError(f"parameter rebuilt from {type(data).__name__}, not from a tensor")
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    """torch._tensor._rebuild_from_type_v2: only for plain tensors/parameters, with a rebuild function we own."""
    if not is_one_of(func, (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_parameter)) or not is_one_of(
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


ALLOWED: dict[tuple[str, str], Any] = {
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
    **{("torch", f"{k}Storage"): StorageType(f"{k}Storage", v) for k, v in DTYPES.items()},
}
CALLABLES = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_parameter, _rebuild_from_type_v2, _encode, _bytes,
             OrderedDict, set, frozenset)  # fmt: skip
