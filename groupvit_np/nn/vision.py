"""The grouping vision tower: patches, three stages of transformer layers with group tokens, final pooling.

Shape legend: B images, N image tokens (196 at 224 px), G group tokens, S output groups, D width, C channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..backend import namespace
from ..config import GroupViTVisionConfig
from .attention import encoder_layer
from .grouping import token_assign
from .ops import Params, layer_norm, mixer_mlp
from .resize import resize_position_table


def patch_embed(pixel_values: Any, p: Params, patch: int) -> Any:
    """Conv2d(k=stride=patch) as one matrix product over flattened patches.  # [B, C, Hpx, Wpx] -> [B, N, D]

    Each patch is flattened in (channel, ky, kx) order, the conv weight's own layout, and the tokens come out in
    row-major grid order (index = row * grid_w + col), as torch's flatten(2).transpose(1, 2).
    """
    xp = namespace(pixel_values)
    b, c, h, w = pixel_values.shape
    gh, gw = h // patch, w // patch
    x = xp.reshape(pixel_values, (b, c, gh, patch, gw, patch))  # [B, C, gh, ky, gw, kx]
    x = xp.reshape(xp.permute_dims(x, (0, 2, 4, 1, 3, 5)), (b, gh * gw, c * patch * patch))  # [B, N, C*k*k]
    weight = xp.astype(p["weight"], x.dtype, copy=False)  # half-precision storage widened as in `ops.linear`
    weight = xp.reshape(weight, (weight.shape[0], c * patch * patch))  # [D, C*k*k]
    return x @ xp.matrix_transpose(weight) + p["bias"]  # [B, N, D]


def vision_embeddings(
    pixel_values: Any, p: Params, config: GroupViTVisionConfig, interpolate_pos_encoding: bool = False
) -> Any:
    """Patch tokens, LayerNorm, *then* the position table (GroupViT's order; no CLS token).  # -> [B, N, D]

    With `interpolate_pos_encoding` the table is resized bicubically to the image's token grid, so any H, W
    that are multiples of the patch size work (HF's method, which its public forward never calls).
    """
    x = patch_embed(pixel_values, p["patch_embeddings"]["projection"], config.patch_size)  # [B, N, D]
    x = layer_norm(x, p["layernorm"], config.layer_norm_eps)  # [B, N, D]
    table = p["position_embeddings"]  # [1, N0, D]
    if interpolate_pos_encoding:
        h, w = pixel_values.shape[2] // config.patch_size, pixel_values.shape[3] // config.patch_size
        xp = namespace(x)
        table = resize_position_table(xp.astype(table, x.dtype, copy=False), h, w)  # [1, N, D], resampled in x's dtype
    return x + table


def vision_stage(
    x: Any, prev_groups: Any, p: Params, config: GroupViTVisionConfig, stage: int, gumbel_noise: Any = None
) -> tuple[Any, Any, Any]:
    """One stage: append group tokens, run the layers, split, group.  # [B, N, D] -> [B, S, D], [B, G, D], [B, S, N]

    The group tokens are the learned table, plus (in the second grouping stage) a token-mixing projection of the
    first stage's group tokens. Returns the new tokens, the post-layer group tokens (the next stage's
    `prev_groups`) and the soft assignment; a stage without group tokens returns (x, None, None).
    """
    xp = namespace(x)
    b, n, d = x.shape
    g = config.num_group_tokens[stage]
    eps, heads = config.layer_norm_eps, config.num_attention_heads
    if g > 0:
        groups = xp.broadcast_to(p["group_token"], (b, g, d))  # [B, G, D]
        if "group_projector" in p:
            norm, mixer = p["group_projector"]
            groups = groups + mixer_mlp(layer_norm(prev_groups, norm, eps), mixer)  # [B, G_prev, D] -> [B, G, D]
        x = xp.concat([x, groups], axis=1)  # [B, N + G, D]: image tokens first, group tokens last
    for layer in p["layers"]:
        x = encoder_layer(x, layer, heads, config.hidden_act, eps)[0]  # [B, N + G, D]
    if g == 0:
        return x, None, None
    x, groups = x[:, :n, :], x[:, n:, :]  # [B, N, D], [B, G, D]
    x, soft = token_assign(
        x, groups, p["downsample"], heads, eps=eps, assign_eps=config.assign_eps, gumbel_noise=gumbel_noise
    )  # [B, S, D], [B, S, N]
    return x, groups, soft


def vision_tower(
    pixel_values: Any,
    p: Params,
    config: GroupViTVisionConfig,
    gumbel_noise: Sequence[Any] | None = None,
    *,
    interpolate_pos_encoding: bool = False,
) -> dict[str, Any]:
    """GroupViT's image encoder.  # [B, C, Hpx, Wpx] -> last_hidden_state [B, S, D], pooler_output [B, D]

    Also returns `hidden_states` (embeddings, each stage's output; the last one before the final LayerNorm) and
    `attentions`, the soft assignment of each grouping stage ([B, 64, 196], [B, 8, 64] by default).
    `gumbel_noise`, one array per grouping stage, switches the assignment to training-time Gumbel sampling;
    `interpolate_pos_encoding` accepts other resolutions (see `vision_embeddings`).
    """
    xp = namespace(pixel_values)
    x = vision_embeddings(pixel_values, p["embeddings"], config, interpolate_pos_encoding)  # [B, N, D]
    hidden_states, attentions, groups = [x], [], None
    noise = list(gumbel_noise) if gumbel_noise is not None else None
    for s, stage in enumerate(p["encoder"]["stages"]):
        stage_noise = noise.pop(0) if noise and config.num_group_tokens[s] > 0 else None
        x, new_groups, soft = vision_stage(x, groups, stage, config, s, stage_noise)
        groups = new_groups if new_groups is not None else groups
        hidden_states.append(x)
        if soft is not None:
            attentions.append(soft)
    last = layer_norm(x, p["layernorm"], config.layer_norm_eps)  # [B, S, D]
    return {
        "last_hidden_state": last,
        "pooler_output": xp.mean(last, axis=1),  # [B, D]: the mean of the final segment tokens
        "hidden_states": tuple(hidden_states),
        "attentions": tuple(attentions),
    }
