"""Multi-head attention, the text masks and the pre-LN transformer layer shared by both towers.

Shape legend: B batch, L/Lq/Lk token counts, D width, H heads, Dh = D/H head width.
"""

from __future__ import annotations

from typing import Any

from ..backend import array_device, namespace, writes_in_place
from .ops import Params, layer_norm, linear, mlp, softmax

_QKV = ("q_proj", "k_proj", "v_proj")


def _leaves_of(p: Params) -> tuple[Any, ...]:
    return tuple(p[n][leaf] for n in _QKV for leaf in ("weight", "bias"))


def fuse_projections(tree: Any) -> Any:
    """A copy of a parameter tree in which every attention block also has one stacked q/k/v projection.

    Each dict holding `q_proj`, `k_proj` and `v_proj` gains `in_proj` = {weight [3D, D], bias [3D]}, and its three
    HF leaves become views into it (no second copy of the weights), so one product computes q, k and v, or k and
    v together from rows D: for cross-attention. The input tree is not modified. `in_proj` records the leaves it
    was made from: a block whose leaves are later replaced is computed from the leaves, never from stale weights
    (nor after a tree is flattened and rebuilt, as `jax.jit` does: the leaves are then new objects). Namespaces
    whose arrays are immutable (JAX) get the tree unchanged: their slices are copies, so the stack would double
    the memory, and their compiler schedules the three products itself.
    """
    if isinstance(tree, list):
        return [fuse_projections(item) for item in tree]
    if not isinstance(tree, dict):
        return tree
    out = {key: fuse_projections(value) for key, value in tree.items()}
    if all(isinstance(tree.get(n), dict) for n in _QKV) and "in_proj" not in tree:
        xp = namespace(*(tree[n]["weight"] for n in _QKV))
        if not writes_in_place(xp.zeros_like(tree["q_proj"]["bias"][:1])):  # a fresh array of this namespace
            return out
        d = tree["q_proj"]["weight"].shape[0]
        fused = {leaf: xp.concat([tree[n][leaf] for n in _QKV], axis=0) for leaf in ("weight", "bias")}
        for i, n in enumerate(_QKV):
            out[n] = {leaf: fused[leaf][i * d : (i + 1) * d, ...] for leaf in ("weight", "bias")}
        out["in_proj"] = {**fused, "made_from": _leaves_of(out)}  # weight [3D, D], bias [3D]
    return out


def _in_proj(p: Params) -> Params | None:
    """The stacked projection if it is current (made from exactly these leaves), else None."""
    fused = p.get("in_proj")
    if fused is None or not all(a is b for a, b in zip(fused["made_from"], _leaves_of(p), strict=True)):
        return None
    return fused


def _rows(p: Params, start: int, stop: int) -> Params:
    return {leaf: p[leaf][start:stop, ...] for leaf in ("weight", "bias")}


def project_heads(x_q: Any, x_kv: Any, p: Params, num_heads: int, scale_q: bool = True) -> tuple[Any, Any, Any]:
    """q (scaled by Dh^-1/2 after its bias, HF's order, unless not `scale_q`), k, v split into heads, contiguous.

    [B, Lq, D], [B, Lk, D] -> [B*H, Lq, Dh], [B*H, Lk, Dh], [B*H, Lk, Dh]. With `in_proj` one product makes
    q, k and v for self-attention (k and v for cross-attention) and one copy lays every head out contiguously:
    NumPy runs stacked products over permuted views in a slow loop, over contiguous stacks at BLAS speed.
    """
    xp = namespace(x_q, x_kv)
    b, lq, d = x_q.shape
    lk, dh = x_kv.shape[1], d // num_heads

    def split(y: Any, n: int, length: int) -> Any:  # [B, L, n*D] -> [n, B*H, L, Dh], one C-ordered copy
        heads = xp.permute_dims(xp.reshape(y, (b, length, n, num_heads, dh)), (2, 0, 3, 1, 4))  # [n, B, H, L, Dh]
        return xp.reshape(xp.reshape(heads, (-1,)), (n, b * num_heads, length, dh))

    fused = _in_proj(p)
    if fused is not None and x_q is x_kv:
        qkv = split(linear(x_q, fused), 3, lq)  # [3, B*H, L, Dh]
        q, k, v = qkv[0, ...], qkv[1, ...], qkv[2, ...]
    elif fused is not None:
        q = split(linear(x_q, _rows(fused, 0, d)), 1, lq)[0, ...]  # [B*H, Lq, Dh]
        kv = split(linear(x_kv, _rows(fused, d, 3 * d)), 2, lk)  # [2, B*H, Lk, Dh]
        k, v = kv[0, ...], kv[1, ...]
    else:
        q, k, v = (split(linear(x, p[n]), 1, x.shape[1])[0, ...]
                   for x, n in ((x_q, "q_proj"), (x_kv, "k_proj"), (x_kv, "v_proj")))  # fmt: skip
    if scale_q:
        q *= dh**-0.5  # in place: q is this function's own copy
    return q, k, v


def multi_head_attention(
    x_q: Any, x_kv: Any, p: Params, num_heads: int, masks: tuple[Any, ...] = ()
) -> tuple[Any, Any]:
    """Scaled dot-product attention over H heads.  # [B, Lq, D], [B, Lk, D] -> [B, Lq, D], [B, H, Lq, Lk]

    `masks` are additive ([B or 1, 1, Lq, Lk]) and added in order.
    """
    xp = namespace(x_q, x_kv)
    b, lq, d = x_q.shape
    lk = x_kv.shape[1]
    q, k, v = project_heads(x_q, x_kv, p, num_heads)  # [B*H, Lq, Dh], [B*H, Lk, Dh], [B*H, Lk, Dh]
    scores = xp.reshape(q @ xp.matrix_transpose(k), (b, num_heads, lq, lk))  # [B, H, Lq, Lk]
    for mask in masks:
        scores += mask  # [B or 1, 1, Lq, Lk] broadcasts into the fresh scores
    weights = softmax(scores, axis=-1, overwrite=True)  # [B, H, Lq, Lk]
    o = xp.reshape(weights, (-1, lq, lk)) @ v  # [B*H, Lq, Dh]
    o = xp.permute_dims(xp.reshape(o, (b, num_heads, lq, d // num_heads)), (0, 2, 1, 3))  # [B, Lq, H, Dh]
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
    h += x  # [B, L, D]: the residual, added into the fresh attention output (addition commutes exactly)
    out = mlp(layer_norm(h, p["layer_norm2"], eps), p["mlp"], act)  # [B, L, D]
    out += h
    return out, weights
