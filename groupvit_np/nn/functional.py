"""The whole model as pure functions of (parameter tree, config, inputs) -> HF's outputs.

The model objects of `model.py` check their inputs, move them into the namespace and call these functions; with
JAX they call them through `jax.jit`. The same functions are what `jax.grad` differentiates: the gradient of
`loss` with respect to every leaf of the tree is the gradient torch autograd computes through HF's model (eval
mode: the straight-through hard assignment; or train-mode Gumbel assignment with the noise passed in).

    import jax
    grads = jax.grad(loss)(model.params, model.config, input_ids, pixel_values, attention_mask)

`params` is the nested tree of the checkpoint's own key names (`params["vision_model"]["encoder"]...`), as
`GroupViTModel.params` holds it; any extra `in_proj` stacks are used only while current (`attention`). Inputs
may be host arrays (NumPy, lists): they are moved into the parameters' namespace and device, and pixels and
noise take the parameters' float dtype. Shape legend: B images, T texts, L text length, S groups, D width,
P projection dim, H x W pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..backend import array_device, host_array, is_array_api_obj, namespace, to_namespace
from ..config import GroupViTConfig, GroupViTTextConfig, GroupViTVisionConfig
from .heads import (
    contrastive_logits,
    contrastive_loss,
    normalized_group_embeddings,
    projection_head,
    segmentation_logits,
)
from .ops import Params, l2_normalize
from .text import text_tower
from .vision import vision_tower


def _moved(x: Any, like: Any, cast: bool = False) -> Any:
    """x as an array of `like`'s namespace and device (None stays None); `cast` gives it like's float dtype."""
    if x is None:
        return None
    xp = namespace(like)
    if is_array_api_obj(x) and namespace(x) is xp:
        return xp.astype(x, like.dtype) if cast and x.dtype != like.dtype else x
    return to_namespace(host_array(x), xp, dtype=like.dtype if cast else None, device=array_device(like))


def _text(params: Params, cfg: GroupViTTextConfig, input_ids: Any, attention_mask: Any, position_ids: Any) -> dict:
    """`text_tower` on inputs moved into the parameters' namespace."""
    p = params["text_model"]
    like = p["final_layer_norm"]["weight"]
    ids, mask, pos = (_moved(a, like) for a in (input_ids, attention_mask, position_ids))
    return text_tower(ids, p, cfg, mask, pos)


def _vision(
    params: Params, cfg: GroupViTVisionConfig, pixel_values: Any, gumbel_noise: Sequence[Any] | None,
    interpolate_pos_encoding: bool,
) -> dict:  # fmt: skip
    """`vision_tower` on inputs moved into the parameters' namespace, pixels and noise in their float dtype."""
    p = params["vision_model"]
    like = p["layernorm"]["weight"]  # a vector: the compute dtype (matrices may be stored in half precision)
    noise = None if gumbel_noise is None else [_moved(n, like, cast=True) for n in gumbel_noise]
    return vision_tower(_moved(pixel_values, like, cast=True), p, cfg, noise,
                        interpolate_pos_encoding=interpolate_pos_encoding)  # fmt: skip


def forward(
    params: Params, config: GroupViTConfig, input_ids: Any, pixel_values: Any, attention_mask: Any = None,
    position_ids: Any = None, *, return_loss: bool = False, output_segmentation: bool = False,
    gumbel_noise: Sequence[Any] | None = None, interpolate_pos_encoding: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """transformers' `GroupViTModel.forward`.  # [T, L] ids, [B, C, H, W] pixels -> HF's fields

    Returns a dict of HF's output fields: `loss` ([] or None; needs T == B), `logits_per_image` [B, T],
    `logits_per_text` [T, B], `segmentation_logits` ([B, T, H, W] or None), `text_embeds` [T, P], `image_embeds`
    [B, P], and `text_model_output` / `vision_model_output`, each a dict of last_hidden_state, pooler_output,
    hidden_states and attentions. `gumbel_noise`, one array per grouping stage, selects training-time assignment.
    """
    vis = _vision(params, config.vision_config, pixel_values, gumbel_noise, interpolate_pos_encoding)
    txt = _text(params, config.text_config, input_ids, attention_mask, position_ids)
    image_embeds = l2_normalize(projection_head(vis["pooler_output"], params["visual_projection"]))  # [B, P]
    text_embeds = l2_normalize(projection_head(txt["pooler_output"], params["text_projection"]))  # [T, P]
    logits_per_text = contrastive_logits(text_embeds, image_embeds, params["logit_scale"])  # [T, B]
    seg = None
    if output_segmentation:
        groups = normalized_group_embeddings(vis["last_hidden_state"], params["visual_projection"])  # [B, S, P]
        seg = segmentation_logits(groups, text_embeds, vis["attentions"], params["logit_scale"],
                                  *pixel_values.shape[2:])  # fmt: skip
    return {
        "loss": contrastive_loss(logits_per_text) if return_loss else None,
        "logits_per_image": namespace(logits_per_text).matrix_transpose(logits_per_text),  # [B, T]
        "logits_per_text": logits_per_text,
        "segmentation_logits": seg,
        "text_embeds": text_embeds,
        "image_embeds": image_embeds,
        "text_model_output": txt,
        "vision_model_output": vis,
    }


def loss(
    params: Params, config: GroupViTConfig, input_ids: Any, pixel_values: Any, attention_mask: Any = None,
    gumbel_noise: Sequence[Any] | None = None,
) -> Any:  # fmt: skip
    """HF's contrastive loss (`return_loss=True`): text i pairs with image i.  # [T, L], [T, C, H, W] -> []"""
    return forward(params, config, input_ids, pixel_values, attention_mask, return_loss=True,
                   gumbel_noise=gumbel_noise)["loss"]  # fmt: skip


def text_features(
    params: Params, config: GroupViTConfig, input_ids: Any, attention_mask: Any = None, position_ids: Any = None
) -> Any:
    """`get_text_features`: the unnormalised projected text features.  # [T, L] -> [T, P]"""
    out = _text(params, config.text_config, input_ids, attention_mask, position_ids)
    return projection_head(out["pooler_output"], params["text_projection"])


def image_features(
    params: Params, config: GroupViTConfig, pixel_values: Any, *, interpolate_pos_encoding: bool = False
) -> Any:
    """`get_image_features`: the unnormalised projected image features.  # [B, C, H, W] -> [B, P]"""
    out = _vision(params, config.vision_config, pixel_values, None, interpolate_pos_encoding)
    return projection_head(out["pooler_output"], params["visual_projection"])


def text_model(
    params: Params, config: GroupViTConfig | GroupViTTextConfig, input_ids: Any, attention_mask: Any = None,
    position_ids: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """transformers' `GroupViTTextModel.forward` on a tree holding `text_model`; `config` is the full config or the
    text tower's.  # [T, L] -> last_hidden_state [T, L, D], pooler_output [T, D], hidden_states, attentions"""
    return _text(params, getattr(config, "text_config", config), input_ids, attention_mask, position_ids)


def vision_model(
    params: Params, config: GroupViTConfig | GroupViTVisionConfig, pixel_values: Any,
    gumbel_noise: Sequence[Any] | None = None, *, interpolate_pos_encoding: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """transformers' `GroupViTVisionModel.forward` on a tree holding `vision_model`; `config` is the full config or
    the vision tower's.  # [B, C, H, W] -> last_hidden_state [B, S, D], pooler_output [B, D], ..., attentions"""
    return _vision(params, getattr(config, "vision_config", config), pixel_values, gumbel_noise,
                   interpolate_pos_encoding)  # fmt: skip


def named_leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """The tree's leaves under their checkpoint names, the inverse of `checkpoints.weights.nest`: `jax.grad`'s result
    becomes {"vision_model.embeddings.layernorm.weight": ..., ...}, as torch's `named_parameters` names them."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list | tuple):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {} if tree is None else {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(named_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out
