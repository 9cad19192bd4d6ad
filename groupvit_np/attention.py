"""Multi-head attention, the text masks and the pre-LN transformer layer shared by both towers.

Shape legend: B batch, L/Lq/Lk token counts, D width, H heads, Dh = D/H head width.
"""

from __future__ import annotations

from typing import Any

from .backend import array_device, namespace
from .ops import Params, layer_norm, linear, mlp, softmax


def multi_head_attention(
    x_q: Any, x_kv: Any, p: Params, num_heads: int, masks: tuple[Any, ...] = ()
) -> tuple[Any, Any]:
    """Scaled dot-product attention over H heads.  # [B, Lq, D], [B, Lk, D] -> [B, Lq, D], [B, H, Lq, Lk]

    q is scaled by Dh^-1/2 after its bias, before q k^T (HF's order). `masks` are additive
    ([B or 1, 1, Lq, Lk]) and added in order.
    """
    xp = namespace(x_q, x_kv)
    b, lq, d = x_q.shape
    lk = x_kv.shape[1]
    dh = d // num_heads
    q = linear(x_q, p["q_proj"]) * dh**-0.5  # [B, Lq, D]
    k = linear(x_kv, p["k_proj"])  # [B, Lk, D]
    v = linear(x_kv, p["v_proj"])  # [B, Lk, D]
    q = xp.permute_dims(xp.reshape(q, (b, lq, num_heads, dh)), (0, 2, 1, 3))  # [B, H, Lq, Dh]
    k = xp.permute_dims(xp.reshape(k, (b, lk, num_heads, dh)), (0, 2, 3, 1))  # [B, H, Dh, Lk]
    v = xp.permute_dims(xp.reshape(v, (b, lk, num_heads, dh)), (0, 2, 1, 3))  # [B, H, Lk, Dh]
    scores = q @ k  # [B, H, Lq, Lk]
    for mask in masks:
        scores = scores + mask  # [B or 1, 1, Lq or 1, Lk] broadcasts
    weights = softmax(scores, axis=-1)  # [B, H, Lq, Lk]
    o = xp.permute_dims(weights @ v, (0, 2, 1, 3))  # [B, Lq, H, Dh]
    return linear(xp.reshape(o, (b, lq, d)), p["out_proj"]), weights  # channel c = h*Dh + j, as torch


def text_attention_mask(length: int, attention_mask: Any, like: Any) -> Any:
    """Additive causal (+ key-padding) mask for the text tower.  # [L], [T, L] or None -> [T or 1, 1, L, L]

    finfo.min where one rule blocks a key; where both do, HF 4.x adds finfo.min twice, which overflows to -inf:
    we write that -inf directly. Rows with any allowed key come out the same either way.
    """
    xp = namespace(like)
    dev = array_device(like)
    pos = xp.arange(length, device=dev)
    causal = (pos[None, :] > pos[:, None])[None, None, :, :]  # [1, 1, L, L]: key j after query i
    zero = xp.zeros((1, 1, length, length), dtype=like.dtype, device=dev)
    low = xp.finfo(like.dtype).min
    if attention_mask is None:
        return xp.where(causal, low, zero)
    padded = (attention_mask == 0)[:, None, None, :]  # [T, 1, 1, L]
    once = xp.where(xp.logical_or(causal, padded), low, zero)  # [T, 1, L, L]
    return xp.where(xp.logical_and(causal, padded), -xp.inf, once)


def encoder_layer(
    x: Any, p: Params, num_heads: int, act: str, eps: float, masks: tuple[Any, ...] = ()
) -> tuple[Any, Any]:
    """Pre-LN transformer layer: x + MHA(LN1 x), then + MLP(LN2 x).  # [B, L, D] -> [B, L, D], [B, H, L, L]"""
    h, weights = multi_head_attention(*(layer_norm(x, p["layer_norm1"], eps),) * 2, p["self_attn"], num_heads, masks)
    x = x + h  # [B, L, D]
    x = x + mlp(layer_norm(x, p["layer_norm2"], eps), p["mlp"], act)  # [B, L, D]
    return x, weights
