"""What the three model objects share: loading a checkpoint into one array namespace, checking inputs, running the
pure functions (compiled on JAX).

`load_params` turns a validated flat state dict into the parameter tree in the compute dtype on the device, one
tensor at a time; `ModelBase` holds config, parameters and namespace and moves host inputs into it after checking
them; `TowerModel` loads one tower out of a full checkpoint. Shape legend: T texts, L text length, B images.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .backend import (
    FLOAT_DTYPES,
    compiler,
    host_array,
    index_dtype,
    is_host,
    is_integer_array,
    resolve_xp,
    to_namespace,
)
from .checkpoints.shapes import validate
from .checkpoints.weights import load_checkpoint, nest
from .config import GroupViTTextConfig, GroupViTVisionConfig
from .nn.attention import fuse_projections


def load_params(
    flat: dict[str, Any], expected: dict[str, tuple[int, ...]], dtype: str, xp: Any, device: Any, source: str,
    storage_dtype: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Validate, cast each tensor to the compute dtype and move it to `device`, one tensor at a time.

    Converting tensor by tensor (and dropping each host array once moved) keeps peak memory near one copy; a
    tensor already in the target dtype stays a view into the memory-mapped file. With `storage_dtype="float16"`
    weight matrices are kept in half precision (products promote them to the compute dtype exactly, as a
    widened copy would) while vectors and scalars, which enter elementwise math, take the compute dtype.
    Attention blocks also get their stacked q/k/v projection (`nn.attention.fuse_projections`).
    """
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {FLOAT_DTYPES}, got {dtype!r}")
    if storage_dtype not in (None, dtype, "float16"):
        raise ValueError(f"storage_dtype must be None, {dtype!r} or 'float16', got {storage_dtype!r}")
    if storage_dtype == "float16" and not hasattr(xp, "float16"):
        raise ValueError(
            f"storage_dtype='float16' needs a namespace with float16 (NumPy, CuPy); {xp.__name__} has none"
        )
    validate(flat, expected, source)
    params = {}
    for key in expected:
        host = flat.pop(key)
        keep = storage_dtype if storage_dtype and len(expected[key]) >= 2 else dtype
        params[key] = to_namespace(host, xp, dtype=keep, device=device)
    return fuse_projections(nest(params))


def tower_tensors(flat: dict[str, Any], prefix: str) -> dict[str, Any]:
    """One tower's tensors out of a full checkpoint (HF's tower models load from full checkpoints too)."""
    return {k: v for k, v in flat.items() if k.startswith(prefix + ".")}


class ModelBase:
    """A config and a parameter tree in one namespace (on one device); inputs are checked on the host, then moved."""

    def __init__(self, config: Any, params: dict[str, Any], xp: Any, device: Any = None, jit: bool | None = None):
        self.config, self.params, self.xp, self.device = config, params, xp, device
        # The compute dtype is the vectors' (matrices may be stored in half precision).
        self.dtype = next(leaf.dtype for leaf in _leaves(params) if leaf.ndim == 1)
        self._compile = compiler(xp) if jit is None or jit else None
        if jit and self._compile is None:
            raise ValueError(f"jit=True needs a namespace with a compiler (jax); {getattr(xp, '__name__', xp)} "
                             "runs eagerly")  # fmt: skip
        self._compiled: dict[Any, Callable] = {}  # one compiled function per set of static options

    @property
    def jit(self) -> bool:
        """Whether calls run compiled (JAX's default): the first call with a new input shape compiles."""
        return self._compile is not None

    def run(self, fn: Callable, *, static: dict[str, Any] | None = None, **arrays: Any) -> Any:
        """fn(self.params, self.config, **arrays, **static): compiled when the model compiles, once per set of
        `static` options (Python values the function branches on) and, by the compiler, once per input shape;
        the compiled functions live as long as the model. `arrays` must already be in the model's namespace."""
        static = static or {}
        if self._compile is None:
            return fn(self.params, self.config, **arrays, **static)
        key = (fn, tuple(sorted(static.items())))
        if key not in self._compiled:
            self._compiled[key] = self._compile(functools.partial(fn, config=self.config, **static))
        return self._compiled[key](self.params, **arrays)

    def _ids(self, input_ids: Any, text_config: GroupViTTextConfig) -> Any:
        """Check token ids on the host, then move them: [..., L] -> [T, L] int64 in the model's namespace."""
        ids = host_array(input_ids)
        if not is_integer_array(ids) or ids.ndim < 1:
            raise ValueError(f"input_ids must be an integer array of shape [T, L], got {ids.dtype} {ids.shape}")
        ids = ids.reshape(-1, ids.shape[-1])
        if ids.shape[-1] > text_config.max_position_embeddings:
            raise ValueError(
                f"input_ids has length {ids.shape[-1]}, longer than max_position_embeddings "
                f"{text_config.max_position_embeddings}: tokenize with truncation=True"
            )
        if ids.size and (ids.min() < 0 or ids.max() >= text_config.vocab_size):
            raise ValueError(f"input_ids must lie in [0, {text_config.vocab_size}), got [{ids.min()}, {ids.max()}]")
        return to_namespace(ids, self.xp, dtype=self._index_name, device=self.device)

    def _mask(self, mask: Any, ids: Any) -> Any:
        if mask is None:
            return None
        m = host_array(mask)
        m = m.reshape(-1, m.shape[-1]) if m.ndim else m
        if m.shape != tuple(ids.shape):
            raise ValueError(f"attention_mask has shape {m.shape}, input_ids {tuple(ids.shape)}")
        return to_namespace(m, self.xp, dtype=self._index_name, device=self.device)

    def _pixels(self, pixel_values: Any, vision_config: GroupViTVisionConfig, interpolate: bool = False) -> Any:
        shape = tuple(pixel_values.shape) if hasattr(pixel_values, "shape") else host_array(pixel_values).shape
        c, size, patch = vision_config.num_channels, vision_config.image_size, vision_config.patch_size
        if len(shape) != 4 or shape[1] != c:
            raise ValueError(f"pixel_values must have shape [B, {c}, H, W], got {shape}")
        if not interpolate and shape[2:] != (size, size):
            raise ValueError(
                f"Input image size ({shape[2]}*{shape[3]}) doesn't match model ({size}*{size}); "
                "pass interpolate_pos_encoding=True for other sizes"
            )
        if interpolate and (shape[2] % patch or shape[3] % patch or min(shape[2:]) < patch):
            raise ValueError(
                f"image height and width must be positive multiples of the patch size {patch}, got {shape[2:]}"
            )
        if is_host(pixel_values):
            return to_namespace(host_array(pixel_values), self.xp, dtype=self.dtype_name,
                                device=self.device)  # fmt: skip
        return self.xp.astype(pixel_values, getattr(self.xp, self.dtype_name))

    @property
    def dtype_name(self) -> str:
        return "float64" if self.dtype == self.xp.float64 else "float32"

    @property
    def _index_name(self) -> str:  # int64, or int32 where that is the namespace's index type (JAX without x64)
        return "int64" if index_dtype(self.xp) == self.xp.int64 else "int32"

    def _positions(self, position_ids: Any) -> Any:
        if position_ids is None:
            return None
        return to_namespace(host_array(position_ids), self.xp, dtype=self._index_name, device=self.device)


class TowerModel(ModelBase):
    """One tower loaded out of a full GroupViT checkpoint, as HF's tower models load."""

    _tower: str
    _shapes: Any

    @classmethod
    def from_pretrained(cls, path, dtype="float32", xp=None, device=None, revision=None, storage_dtype=None,
                        jit=None):  # fmt: skip
        """As `GroupViTModel.from_pretrained`, for this tower's weights."""
        full, flat = load_checkpoint(path, revision=revision)
        xp, config = resolve_xp(xp), getattr(full, f"{cls._tower}_config")
        expected = dict(cls._shapes(config))
        params = load_params(tower_tensors(flat, f"{cls._tower}_model"), expected, dtype, xp, device, str(path),
                             storage_dtype)  # fmt: skip
        return cls(config, params, xp, device, jit)


def _leaves(tree: Any):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    elif isinstance(tree, list | tuple):
        for v in tree:
            yield from _leaves(v)
    elif tree is not None:
        yield tree
