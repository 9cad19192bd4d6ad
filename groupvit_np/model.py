"""The HF-shaped facade: `GroupViTModel`, `GroupViTTextModel`, `GroupViTVisionModel` and their outputs.

A model is a config plus a parameter tree in one array namespace; calling it validates the inputs, moves them
into that namespace and runs the pure functions of `nn.functional` (through `jax.jit` on JAX, compiled once per
input shape); what the three share is in `model_base`. Shape legend: B images, T texts, L text length, S groups,
D width, P projection dim.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from .backend import resolve_xp
from .checkpoints.shapes import expected_shapes, text_shapes, vision_shapes
from .checkpoints.weights import load_checkpoint
from .config import GroupViTConfig, GroupViTTextConfig, GroupViTVisionConfig
from .errors import CheckpointError
from .model_base import ModelBase, TowerModel, load_params, tower_tensors
from .nn import functional as F
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
# The models.


class GroupViTModel(ModelBase):
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
        config, flat = load_checkpoint(path, revision=revision)
        for tower, model in (("text", "GroupViTTextModel"), ("vision", "GroupViTVisionModel")):
            if flat and len(tower_tensors(flat, f"{tower}_model")) == len(flat):
                raise CheckpointError(f"{path} holds only the {tower} tower: load it with {model}.from_pretrained")
        xp = resolve_xp(xp)
        params = load_params(flat, expected_shapes(config), dtype, xp, device, str(path), storage_dtype)
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


class GroupViTTextModel(TowerModel):
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


class GroupViTVisionModel(TowerModel):
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
