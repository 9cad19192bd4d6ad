"""The unpickler that reads torch's `data.pkl`: globals come from the allow-list only, and every opcode that can
call or mutate an object is re-checked, so a hostile file can neither run code nor build anything but plain data."""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from typing import Any

from ..errors import TorchPickleError
from .torch_allowlist import ALLOWED, CALLABLES, DTYPES, LazyStorage, OpaqueObject, StorageType, is_int, is_one_of


class Unpickler(pickle._Unpickler):  # the pure-Python class: its dispatch table can be overridden per opcode
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes, members: dict[str, zipfile.ZipInfo], prefix: str, opaque: bool):
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self.members, self.prefix, self.opaque = members, prefix, opaque
        self.storages: dict[str, LazyStorage] = {}

    def find_class(self, module: str, name: str) -> Any:
        hit = ALLOWED.get((module, name))
        if hit is not None:
            return hit
        if module == "torch" and name.endswith("Storage"):
            raise TorchPickleError(f"unsupported tensor dtype: torch.{name} (we read {', '.join(DTYPES)})")
        if self.opaque:
            return OpaqueObject(f"{module}.{name}")
        raise TorchPickleError(
            f"refusing the global '{module}.{name}': a plain checkpoint holds only tensors, storages and containers "
            "(the file may be malicious)"
        )

    def persistent_load(self, pid: Any) -> LazyStorage:
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"):
            raise TorchPickleError(f"refusing the persistent id {str(pid)[:80]} (torch writes storage records only)")
        _, stype, key, _location, numel = pid  # location ("cpu", "cuda:0") is ignored: arrays live on the host
        if not isinstance(stype, StorageType):
            raise TorchPickleError(f"refusing storage type {stype!r}: it must be a torch.*Storage")
        if type(key) is not str or not key.isalnum() or not is_int(numel) or numel < 0:
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
        self.storages[key] = LazyStorage(key, stype, numel)
        return self.storages[key]

    def _refuse(self, what: str) -> None:
        raise TorchPickleError(f"refusing {what}")

    def _reduce(self) -> None:
        args, func = self.stack.pop(), self.stack[-1]
        if self.opaque and isinstance(func, OpaqueObject):
            self.stack[-1] = OpaqueObject(func.name)
        elif is_one_of(func, CALLABLES) and type(args) is tuple:
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
