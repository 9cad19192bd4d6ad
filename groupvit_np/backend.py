"""Array-namespace plumbing: the one place that knows about NumPy, CuPy, JAX, torch and other Array API libraries.

Model code never imports NumPy for math. It calls `namespace(x)` on its inputs and uses the Array API standard
through the returned `xp`. Where a faster path needs more than the standard (writing into an array, host memory
for cache-sized blocks), the model asks this module about the *capability*, never about a library's name. This
module also holds the few host <-> device moves the facade needs (parameters in, results out); those are the only
crossings, and they are explicit.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
from array_api_compat import array_namespace, is_array_api_obj, is_jax_array, is_jax_namespace, is_writeable_array
from array_api_compat import device as array_device

__all__ = [
    "namespace",
    "array_device",
    "to_namespace",
    "to_numpy",
    "host_array",
    "is_host",
    "is_integer_array",
    "resolve_xp",
    "writes_in_place",
    "in_host_memory",
    "boolean_indexing",
    "index_dtype",
    "elementwise_chunk",
    "slice_add",
    "stop_gradient",
    "compiler",
    "FLOAT_DTYPES",
]

FLOAT_DTYPES = ("float32", "float64")


def namespace(*arrays: Any) -> Any:
    """The Array API namespace shared by `arrays` (array_api_compat's wrapper for NumPy and CuPy)."""
    return array_namespace(*arrays)


def resolve_xp(xp: Any = None) -> Any:
    """Turn a user's `xp` argument (None, "numpy", "cupy", "jax", "torch", a module) into an Array API namespace.

    "jax" is `jax.numpy` (an Array API namespace itself; float64 needs `jax.config.update("jax_enable_x64", True)`);
    "torch" is array-api-compat's wrapper around torch.
    """
    if xp is None or xp == "numpy":
        import array_api_compat.numpy as xp_np

        return xp_np
    named = {
        "cupy": ("array_api_compat.cupy", "the cupy backend needs CuPy: pip install 'groupvit-np[cuda12]'"),
        "jax": ("jax.numpy", "the jax backend needs JAX: pip install 'groupvit-np[jax]'"),
        "torch": ("array_api_compat.torch", "the torch backend needs torch: pip install 'groupvit-np[reference]'"),
    }
    if isinstance(xp, str):
        if xp not in named:
            raise ValueError(f"unknown backend {xp!r}; use 'numpy', 'cupy', 'jax', 'torch' or an Array API namespace")
        module, hint = named[xp]
        try:
            return importlib.import_module(module)
        except ImportError as err:  # pragma: no cover - depends on the machine
            raise ImportError(hint) from err
    return xp


# ---------------------------------------------------------------------------------------------------------------
# Capabilities: what a namespace's arrays can do, asked of the arrays themselves.


def writes_in_place(x: Any) -> bool:
    """Whether `x` accepts in-place writes (`x[i:j] = y`). NumPy, CuPy and torch arrays do; JAX arrays are
    immutable (there `x += y` rebinds the name to a new array, which is why augmented assignments are safe)."""
    return is_writeable_array(x)


def in_host_memory(x: Any) -> bool:
    """Whether `x` lives in CPU memory, by its DLPack device (kDLCPU = 1): the standard's own device query."""
    try:
        return int(x.__dlpack_device__()[0]) == 1
    except (AttributeError, TypeError, ValueError):  # no DLPack: assume an accelerator
        return False


def boolean_indexing(xp: Any) -> bool:
    """Whether `x[mask]` (a data-dependent shape) is supported: the namespace's declared capability."""
    info = getattr(xp, "__array_namespace_info__", None)
    return bool(info().capabilities().get("boolean indexing", False)) if info is not None else False


def index_dtype(xp: Any) -> Any:
    """The namespace's default indexing dtype (int64, or int32 for JAX without x64): token ids and positions."""
    info = getattr(xp, "__array_namespace_info__", None)
    return info().default_dtypes()["indexing"] if info is not None else xp.int64


def elementwise_chunk(x: Any) -> int | None:
    """Elements per block for long chains of elementwise ops on `x`, or None to run them on the whole array.

    On the CPU each eager op is a full pass over memory; blocks of 2^17 elements keep a chain of ~30 ops in the
    L2 cache (GELU runs 2.8x faster), written into one output in place. So blocks need arrays in host memory that
    accept writes. A GPU runs each op as one kernel and gains nothing from blocks; a compiler (JAX's XLA) fuses the
    chain itself and its arrays are immutable.
    """
    return 1 << 17 if in_host_memory(x) and writes_in_place(x) else None


def slice_add(x: Any, key: tuple[slice, ...], y: Any) -> Any:
    """x with y added into x[key] (a tuple of step-1 slices, one per leading axis): `x[key] += y` in place where
    arrays accept writes; elsewhere y is zero-padded to x's shape and added, so immutable arrays work too."""
    if writes_in_place(x):
        x[key] = x[key] + y
        return x
    xp = namespace(x, y)
    dev = array_device(x)
    for axis, (s, n) in enumerate(zip(key, x.shape, strict=False)):
        start, stop, _ = s.indices(n)
        before = (*y.shape[:axis], start, *y.shape[axis + 1 :])
        after = (*y.shape[:axis], n - stop, *y.shape[axis + 1 :])
        y = xp.concat([xp.zeros(before, dtype=y.dtype, device=dev), y, xp.zeros(after, dtype=y.dtype, device=dev)],
                      axis=axis)  # fmt: skip
    return x + y


def stop_gradient(x: Any) -> Any:
    """x, with gradients stopped from flowing back through it (HF's `.detach()`); the value is unchanged.

    The Array API has no autodiff, so each library that has one spells this its own way: `jax.lax.stop_gradient`
    (also on traced values inside `jax.grad`), torch's `detach`. Arrays of other namespaces are returned as is.
    """
    if is_jax_array(x):
        import jax

        return jax.lax.stop_gradient(x)
    detach = getattr(x, "detach", None)
    return detach() if callable(detach) else x


def compiler(xp: Any) -> Any:
    """The tracing compiler that takes this namespace's code unchanged, or None: `jax.jit` for `jax.numpy`.

    A compiled function is specialised to its input shapes: each new shape pays one compilation (seconds for the
    full-size model), later calls reuse it.
    """
    if is_jax_namespace(xp):
        import jax

        return jax.jit
    return None


def to_namespace(a: Any, xp: Any, *, dtype: Any = None, device: Any = None) -> Any:
    """Move a host array (NumPy or nested lists) into namespace `xp` on `device`, optionally casting.

    This is the explicit host -> device crossing used when loading parameters and taking user inputs. `dtype` is
    a dtype of `xp` or its name; host data is cast on the host first, so a namespace never sees a dtype it lacks
    (the Array API has no float16) and a device never receives a copy that is cast again.
    """
    if isinstance(dtype, str):
        name, dtype = dtype, getattr(xp, dtype)
    else:
        name = None
    if is_array_api_obj(a) and not isinstance(a, np.ndarray):
        out = a if device is None else xp.asarray(a, device=device)
    else:
        host = np.asarray(a, dtype=name)
        out = xp.asarray(host, device=device) if device is not None else xp.asarray(host)
    if dtype is not None and out.dtype != dtype:
        out = xp.astype(out, dtype)
    if dtype is not None and out.dtype != dtype:  # JAX without x64 silently narrows float64 and int64
        raise ValueError(
            f"{getattr(xp, '__name__', xp)} made {out.dtype} where {dtype} was asked for"
            + (": enable float64 with jax.config.update('jax_enable_x64', True)" if is_jax_namespace(xp) else "")
        )
    return out


def is_host(a: Any) -> bool:
    """Whether `a` is host data (a NumPy array or nested lists) rather than an array of a device namespace."""
    return isinstance(a, np.ndarray | list | tuple)


def host_array(a: Any) -> np.ndarray:
    """Any input (an array of any namespace, nested lists) as host NumPy: the facade checks inputs there."""
    return to_numpy(a) if is_array_api_obj(a) else np.asarray(a)


def is_integer_array(a: np.ndarray) -> bool:
    return a.dtype != object and bool(np.issubdtype(a.dtype, np.integer))


def to_numpy(a: Any) -> np.ndarray:
    """Bring an array of any supported namespace back to host NumPy (the explicit device -> host crossing)."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        return a.get()
    module = type(a).__module__
    if module.startswith("array_api_strict"):
        import array_api_strict

        a = a.to_device(array_api_strict.Device("CPU_DEVICE"))
        return np.asarray(a._array)  # noqa: SLF001 - the library's host escape hatch, used only here
    return np.asarray(a)
