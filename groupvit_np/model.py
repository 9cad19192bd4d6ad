"""The HF-shaped facade: `GroupViTModel`, `GroupViTTextModel`, `GroupViTVisionModel` and their outputs.

A model is a config plus a parameter tree in one array namespace; calling it validates the inputs, moves them
into that namespace and runs the pure functions of `functional` (through `jax.jit` on JAX, compiled once per
input shape). Shape legend: B images, T texts, L text length, S groups, D width, P projection dim.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
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
from .checkpoints.shapes import expected_shapes, text_shapes, validate, vision_shapes
from .checkpoints.weights import load_checkpoint, nest
from .config import GroupViTConfig, GroupViTTextConfig, GroupViTVisionConfig
from .errors import CheckpointError
from .nn import functional as F
from .nn.attention import fuse_projections
from .nn.text import eos_positions

# ---------------------------------------------------------------------------------------------------------------
# Outputs: dataclasses read by attribute or key, like transformers' ModelOutput.


class _Output:
    def __getitem__(self, key: str | int) -> Any:
        return getattr(self, key) if isinstance(key, str) else self.to_tuple()[key]

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def to_tuple(self) -> tuple[Any, ...]:
        """The non-None fields in declaration order (HF's `return_dict=False` order)."""
        return tuple(v.to_tuple() if isinstance(v, _Output) else v for k in self.keys() for v in [getattr(self, k)])


@dataclass
class BaseModelOutputWithPooling(_Output):
    last_hidden_state: Any = None
    pooler_output: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None


@dataclass
class GroupViTModelOutput(_Output):
    loss: Any = None
    logits_per_image: Any = None
    logits_per_text: Any = None
    segmentation_logits: Any = None
    text_embeds: Any = None
    image_embeds: Any = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None


def _tower_output(out: dict[str, Any]) -> BaseModelOutputWithPooling:
    return BaseModelOutputWithPooling(**out)


def _drop(out: dict[str, Any], hidden: bool, attentions: bool) -> dict[str, Any]:
    """A tower's outputs without the fields not asked for (under a compiler, work nobody reads is not done)."""
    return {**out, "hidden_states": out["hidden_states"] if hidden else None,
            "attentions": out["attentions"] if attentions else None}  # fmt: skip


def _forward(params: Any, config: GroupViTConfig, *, hidden: bool, attentions: bool, **kw: Any) -> dict[str, Any]:
    out = F.forward(params, config, **kw)
    for tower in ("text_model_output", "vision_model_output"):
        out[tower] = _drop(out[tower], hidden, attentions)
    return out


def _tower(params: Any, config: Any, *, fn: Callable, hidden: bool, attentions: bool, **kw: Any) -> dict[str, Any]:
    return _drop(fn(params, config, **kw), hidden, attentions)


# ---------------------------------------------------------------------------------------------------------------
# Loading and input checks shared by the three models.


def _load_params(
    flat: dict[str, Any], expected: dict[str, tuple[int, ...]], dtype: str, xp: Any, device: Any, source: str,
    storage_dtype: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Validate, cast each tensor to the compute dtype and move it to `device`, one tensor at a time.

    Converting tensor by tensor (and dropping each host array once moved) keeps peak memory near one copy; a
    tensor already in the target dtype stays a view into the memory-mapped file. With `storage_dtype="float16"`
    weight matrices are kept in half precision (products promote them to the compute dtype exactly, as a
    widened copy would) while vectors and scalars, which enter elementwise math, take the compute dtype.
    Attention blocks also get their stacked q/k/v projection (`attention.fuse_projections`).
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


def _select(flat: dict[str, Any], prefix: str) -> dict[str, Any]:
    """One tower's tensors out of a full checkpoint (HF's tower models load from full checkpoints too)."""
    return {k: v for k, v in flat.items() if k.startswith(prefix + ".")}


class _Base:
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


class _Tower(_Base):
    """One tower loaded out of a full GroupViT checkpoint, as HF's tower models load."""

    _tower: str
    _shapes: Any

    @classmethod
    def from_pretrained(cls, path, dtype="float32", xp=None, device=None, revision=None, storage_dtype=None,
                        jit=None):  # fmt: skip
        """As `GroupViTModel.from_pretrained`, for this tower's weights."""
        full, flat = _from_pretrained(path, revision)
        xp, config = resolve_xp(xp), getattr(full, f"{cls._tower}_config")
        expected = dict(cls._shapes(config))
        params = _load_params(_select(flat, f"{cls._tower}_model"), expected, dtype, xp, device, str(path),
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


def _from_pretrained(path, revision):
    return load_checkpoint(path, revision=revision)


# ---------------------------------------------------------------------------------------------------------------
# The models.


class GroupViTModel(_Base):
    """Both towers, projection heads, contrastive logits and segmentation (transformers' `GroupViTModel`)."""

    config: GroupViTConfig

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, dtype: str = "float32", xp: Any = None, device: Any = None,
        revision: str | None = None, storage_dtype: str | None = None, jit: bool | None = None,
    ) -> GroupViTModel:  # fmt: skip
        """Load a checkpoint folder, weights file, NVlabs .pth or Hub repo id; compute in `dtype` on `xp`/`device`.

        `xp`: "numpy" (default), "cupy", "jax", "torch" or an Array API namespace. `storage_dtype="float16"` keeps
        the weight matrices in half precision (half the memory; same results as loading a float16 checkpoint in
        float32, a little slower). With "jax" calls are compiled by `jax.jit` unless `jit=False`: the first call
        with each new input shape compiles (about 5 s for the full-size image tower, 10 s for a full forward),
        later calls reuse it for the life of the model. float64 on JAX needs
        `jax.config.update("jax_enable_x64", True)` first.
        """
        config, flat = _from_pretrained(path, revision)
        for tower, model in (("text", "GroupViTTextModel"), ("vision", "GroupViTVisionModel")):
            if flat and len(_select(flat, f"{tower}_model")) == len(flat):
                raise CheckpointError(f"{path} holds only the {tower} tower: load it with {model}.from_pretrained")
        xp = resolve_xp(xp)
        params = _load_params(flat, expected_shapes(config), dtype, xp, device, str(path), storage_dtype)
        return cls(config, params, xp, device, jit)

    def get_text_features(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None) -> Any:
        """Unnormalised projected text features.  # [T, L] -> [T, P]

        Only positions up to the last pooled one are computed: the mask is causal, so later (padding) positions
        cannot change the pooled states, and a batch padded to 77 costs what its longest text costs.
        """
        cfg = self.config.text_config
        ids = self._ids(input_ids, cfg)
        mask, pos = self._mask(attention_mask, ids), self._positions(position_ids)
        keep = int(self.xp.max(eos_positions(ids, cfg))) + 1 if ids.shape[0] else ids.shape[1]
        if keep < ids.shape[1]:
            ids, mask = ids[:, :keep], None if mask is None else mask[:, :keep]
            pos = None if pos is None else pos[..., :keep]
        return self.run(F.text_features, input_ids=ids, attention_mask=mask, position_ids=pos)

    def get_image_features(self, pixel_values: Any, interpolate_pos_encoding: bool = False) -> Any:
        """Unnormalised projected image features.  # [B, C, H, W] -> [B, P]"""
        pixels = self._pixels(pixel_values, self.config.vision_config, interpolate_pos_encoding)
        return self.run(F.image_features, pixel_values=pixels,
                        static={"interpolate_pos_encoding": interpolate_pos_encoding})  # fmt: skip

    def __call__(
        self, input_ids: Any = None, pixel_values: Any = None, attention_mask: Any = None, position_ids: Any = None,
        return_loss: bool = False, output_attentions: bool = False, output_hidden_states: bool = False,
        output_segmentation: bool | None = None, return_dict: bool = True, gumbel_noise: Sequence[Any] | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> GroupViTModelOutput | tuple[Any, ...]:  # fmt: skip
        """Logits between every image and text, HF's fields and order. `gumbel_noise` is for the vision tower."""
        if input_ids is None or pixel_values is None:
            raise ValueError("GroupViTModel needs both input_ids and pixel_values (use get_*_features for one tower)")
        cfg = self.config
        if output_segmentation is None:
            output_segmentation = cfg.output_segmentation
        output_attentions = output_attentions or output_segmentation  # HF forces attentions for segmentation
        ids = self._ids(input_ids, cfg.text_config)
        pixels = self._pixels(pixel_values, cfg.vision_config, interpolate_pos_encoding)
        if return_loss and ids.shape[0] != pixels.shape[0]:
            raise ValueError(
                f"return_loss pairs text i with image i: got {ids.shape[0]} texts, {pixels.shape[0]} images"
            )
        static = {"return_loss": return_loss, "output_segmentation": output_segmentation,
                  "hidden": output_hidden_states, "attentions": output_attentions,
                  "interpolate_pos_encoding": interpolate_pos_encoding}  # fmt: skip
        o = self.run(_forward, input_ids=ids, pixel_values=pixels, attention_mask=self._mask(attention_mask, ids),
                     position_ids=self._positions(position_ids), gumbel_noise=gumbel_noise,
                     static=static)  # fmt: skip
        out = GroupViTModelOutput(**{**o, "text_model_output": _tower_output(o["text_model_output"]),
                                     "vision_model_output": _tower_output(o["vision_model_output"])})  # fmt: skip
        return out if return_dict else out.to_tuple()


class GroupViTTextModel(_Tower):
    """The text tower alone (transformers' `GroupViTTextModel`), loadable from a full GroupViT checkpoint."""

    config: GroupViTTextConfig

    _tower, _shapes = "text", staticmethod(text_shapes)

    def __call__(self, input_ids, attention_mask=None, position_ids=None, output_attentions=False,
                 output_hidden_states=False, return_dict=True):  # fmt: skip
        """CLIP text encoder outputs.  # [T, L] -> last_hidden_state [T, L, D], pooler_output [T, D]"""
        ids = self._ids(input_ids, self.config)
        static = {"fn": F.text_model, "hidden": output_hidden_states, "attentions": output_attentions}
        out = self.run(_tower, input_ids=ids, attention_mask=self._mask(attention_mask, ids),
                       position_ids=self._positions(position_ids), static=static)  # fmt: skip
        result = _tower_output(out)
        return result if return_dict else result.to_tuple()


class GroupViTVisionModel(_Tower):
    """The grouping vision tower alone (transformers' `GroupViTVisionModel`)."""

    config: GroupViTVisionConfig

    _tower, _shapes = "vision", staticmethod(vision_shapes)

    def __call__(self, pixel_values, output_attentions=False, output_hidden_states=False, return_dict=True,
                 gumbel_noise=None, interpolate_pos_encoding=False):  # fmt: skip
        """Vision outputs.  # [B, C, H, W] -> last_hidden_state [B, S, D], pooler_output [B, D]"""
        pixels = self._pixels(pixel_values, self.config, interpolate_pos_encoding)
        static = {"fn": F.vision_model, "hidden": output_hidden_states, "attentions": output_attentions,
                  "interpolate_pos_encoding": interpolate_pos_encoding}  # fmt: skip
        out = self.run(_tower, pixel_values=pixels, gumbel_noise=gumbel_noise, static=static)
        result = _tower_output(out)
        return result if return_dict else result.to_tuple()
