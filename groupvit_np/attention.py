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

    def heads(x: Any, length: int, order: tuple[int, ...]) -> Any:
        # [B, L, D] -> [B*H, ...]; flattening the permuted view makes one C-ordered copy. Contiguous operands keep
        # the batched products on BLAS: NumPy runs permuted or transposed stacks in a slow loop (0.76 s vs 6 ms).
        split = xp.reshape(x, (b, length, num_heads, dh))  # [B, L, H, Dh]
        flat = xp.reshape(xp.permute_dims(split, order), (-1,))
        return xp.reshape(flat, (b * num_heads, *(split.shape[i] for i in order[2:])))

    q = heads(linear(x_q, p["q_proj"]) * dh**-0.5, lq, (0, 2, 1, 3))  # [B*H, Lq, Dh]
    k_t = heads(linear(x_kv, p["k_proj"]), lk, (0, 2, 3, 1))  # [B*H, Dh, Lk], k already transposed
    v = heads(linear(x_kv, p["v_proj"]), lk, (0, 2, 1, 3))  # [B*H, Lk, Dh]
    scores = xp.reshape(q @ k_t, (b, num_heads, lq, lk))  # [B, H, Lq, Lk]
    for mask in masks:
        scores = scores + mask  # [B or 1, 1, Lq, Lk] broadcasts
    weights = softmax(scores, axis=-1)  # [B, H, Lq, Lk]
    o = xp.reshape(weights, (-1, lq, lk)) @ v  # [B*H, Lq, Dh]
    o = xp.permute_dims(xp.reshape(o, (b, num_heads, lq, dh)), (0, 2, 1, 3))  # [B, Lq, H, Dh]
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
