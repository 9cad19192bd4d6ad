"""The grouping block, the heart of GroupViT: assign image tokens to groups and merge them (TokenAssign).

Shape legend: B images, N image tokens, G group tokens in, S groups out, D width.
"""

from __future__ import annotations

from typing import Any

from ..backend import array_device, namespace, stop_gradient
from .attention import multi_head_attention, project_heads
from .ops import Params, layer_norm, linear, mixer_mlp, mlp, softmax


def one_hot_argmax(y: Any, axis: int = -2) -> Any:
    """One-hot of the argmax along `axis` (first index on ties, as torch.max).  # [B, S, N] -> [B, S, N]"""
    xp = namespace(y)
    idx = xp.argmax(y, axis=axis, keepdims=True)  # [B, 1, N] for axis -2
    shape = [1] * y.ndim
    shape[axis] = y.shape[axis]
    classes = xp.reshape(xp.arange(y.shape[axis], device=array_device(y)), tuple(shape))  # [1, S, 1]
    return xp.astype(idx == classes, y.dtype)


def straight_through(soft: Any, axis: int = -2) -> Any:
    """The one-hot of soft's argmax as the value, soft's gradient as the gradient.  # [B, S, N] -> same

    Written as HF writes it, (hard - soft.detach()) + soft: the forward value matches bit for bit (it is 1 up to
    rounding of 1 - soft + soft), and autodiff (JAX, torch) sees only the last term. Without the stop the
    gradient would be zero: the one-hot has none, and -soft + soft cancels.
    """
    return (one_hot_argmax(soft, axis) - stop_gradient(soft)) + soft


def hard_softmax(logits: Any, axis: int = -2) -> Any:
    """Straight-through one-hot of softmax(logits): value one_hot(argmax), gradient of the softmax.  # -> same"""
    return straight_through(softmax(logits, axis=axis), axis)


def gumbel_softmax(logits: Any, noise: Any, tau: float = 1.0, axis: int = -2) -> Any:
    """Training-time hard Gumbel-softmax with explicit Gumbel(0, 1) `noise` of the logits' shape.

    argmax(logits + noise) samples from softmax(logits) (the Gumbel-max trick); the straight-through one-hot is
    as in `hard_softmax`. torch draws noise = -log(Exp(1)); pass the same draw to reproduce HF in train mode.
    """
    if noise.shape != logits.shape:
        raise ValueError(f"gumbel noise has shape {noise.shape}, expected the logits' {logits.shape}")
    return straight_through(softmax((logits + noise) / tau, axis=axis), axis)


def assign_attention(
    groups: Any,
    tokens: Any,
    p: Params,
    *,
    assign_eps: float = 1.0,
    hard: bool = True,
    gumbel_noise: Any = None,
) -> tuple[Any, Any]:
    """Single-head assignment of N tokens to S groups, then a per-group average.  # [B,S,D], [B,N,D] -> [B,S,D], [B,S,N]

    The softmax runs over the *group* axis: each token chooses a group (a column of A sums to 1), unlike
    attention where each query spreads over keys. Rows are then divided by (token count + assign_eps): with
    assign_eps = 1 this is a count, not a tiny epsilon, so an empty group yields a zero row and outputs proj.bias.
    Returns the projected group features and the noise-free soft assignment.
    """
    xp = namespace(groups, tokens)
    q, k, v = project_heads(groups, tokens, p, num_heads=1, scale_q=False)  # [B, S, D], [B, N, D], [B, N, D]
    raw = q @ xp.matrix_transpose(k)  # [B, S, N]
    raw *= groups.shape[-1] ** -0.5  # one head: scale the product by D^-1/2 (HF's order, which argmax can see)
    soft = softmax(raw, axis=-2)  # [B, S, N]
    if gumbel_noise is not None:
        assign = gumbel_softmax(raw, gumbel_noise, axis=-2)
    elif hard:
        assign = straight_through(soft, -2)  # hard_softmax(raw), reusing soft
    else:
        assign = soft
    assign = assign / (xp.sum(assign, axis=-1, keepdims=True) + assign_eps)  # [B, S, N]
    return linear(assign @ v, p["proj"]), soft  # [B, S, D], [B, S, N]


def cross_attention_layer(query: Any, key: Any, p: Params, num_heads: int, eps: float) -> Any:
    """Groups attend to image tokens: no pre-norm, MLP with pre-LN, post-norm.  # [B,S,D], [B,N,D] -> [B,S,D]"""
    x = query + multi_head_attention(query, key, p["attn"], num_heads)[0]  # [B, S, D]
    x = x + mlp(layer_norm(x, p["norm2"], eps), p["mlp"], "gelu")  # [B, S, D]
    return layer_norm(x, p["norm_post"], eps)


def token_assign(
    tokens: Any,
    groups: Any,
    p: Params,
    num_heads: int,
    *,
    eps: float = 1e-5,
    assign_eps: float = 1.0,
    hard: bool = True,
    gumbel_noise: Any = None,
) -> tuple[Any, Any]:
    """GroupViT's grouping block: N image tokens become S segment tokens.  # [B,N,D], [B,G,D] -> [B,S,D], [B,S,N]

    The G group tokens are mixed into S queries, refined by cross-attention to the tokens, then each token is
    hard-assigned to one query; the output is the assigned average plus the query itself, then an MLP.
    """
    groups = layer_norm(groups, p["norm_tokens"], eps)  # [B, G, D]
    tokens = layer_norm(tokens, p["norm_x"], eps)  # [B, N, D]
    queries = layer_norm(mixer_mlp(groups, p["mlp_inter"]), p["norm_post_tokens"], eps)  # [B, S, D]
    queries = cross_attention_layer(queries, tokens, p["pre_assign_attn"], num_heads, eps)  # [B, S, D]
    out, soft = assign_attention(
        queries, tokens, p["assign"], assign_eps=assign_eps, hard=hard, gumbel_noise=gumbel_noise
    )  # [B, S, D], [B, S, N]
    out = out + queries  # the residual is the refined group query, not the image tokens
    out = out + mlp(layer_norm(out, p["norm_new_x"], eps), p["mlp_channels"], "gelu")  # [B, S, D]
    return out, soft
