"""Primitive layers as pure functions over parameter subtrees, in the Array API standard.

Shape legend (shared by every model module): B images, T texts, L text length, N image tokens, G group tokens,
S output groups, D width, H heads, Dh head width, P projection dim. `...` is any leading shape.
A parameter subtree `p` holds the checkpoint's tensors under their HF leaf names, untransposed. GELU's erf is in
`special`.
"""

from __future__ import annotations

import math
from typing import Any

from ..backend import elementwise_chunk, namespace, stop_gradient
from .special import erf, half_erf_float32

Params = dict[str, Any]

# ---------------------------------------------------------------------------------------------------------------
# Activations, normalisation, dense layers.


def _map_rows(fn: Any, x: Any, overwrite: bool) -> Any:
    """fn(x) for an `fn` that works row by row along the last axis, in blocks of rows on CPU namespaces.

    Each block's chain of passes then stays in the L2 cache (see `backend.elementwise_chunk`) instead of streaming
    every pass through memory. Results go into one output, which is `x` itself when the caller owns it
    (`overwrite`, and then fn may also work in its block). GPU namespaces, and immutable arrays (JAX, whose
    compiler fuses the chain instead), run fn(x) whole.  # [..., W] -> [..., W]
    """
    xp = namespace(x)
    chunk = elementwise_chunk(x)
    size = math.prod(x.shape)
    if chunk is None or size <= 2 * chunk:
        return fn(x)
    width = x.shape[-1]
    flat = xp.reshape(x, (size // width, width))  # [R, W]
    out = flat if overwrite else xp.empty_like(flat)  # [R, W]
    rows, step = flat.shape[0], max(1, chunk // width)
    for i in range(0, rows, step):
        j = min(i + step, rows)  # the Array API leaves out-of-bounds slice stops unspecified
        out[i:j, :] = fn(flat[i:j, :])
    return xp.reshape(out, x.shape)


def _gelu(x: Any) -> Any:
    xp = namespace(x)
    if x.dtype == xp.float32:  # x * (1/2 + 1/2 erf(x/sqrt 2)) with the constants folded: 27 passes, not 31
        y = half_erf_float32(x)  # 1/2 erf(x/sqrt 2)
        y += 0.5
        y *= x
        return y
    y = erf(x * (1.0 / math.sqrt(2.0)))  # torch's order, x * 0.5 * (1 + erf): halving is exact, so this matches
    y += 1.0
    y *= x
    y *= 0.5
    return y


def gelu(x: Any, overwrite: bool = False) -> Any:
    """Exact GELU, x * (1 + erf(x/sqrt(2))) / 2 (torch's default `nn.GELU()`; not the tanh approximation).

    float64 goes through the ulp-accurate `erf`; float32 through Eigen's rational erf (a few float32 ulp).
    `overwrite=True` lets the result reuse x's memory: for arrays the caller owns, such as a fresh product.
    """
    return _map_rows(_gelu, x, overwrite)


def quick_gelu(x: Any, overwrite: bool = False) -> Any:
    """CLIP's x*sigmoid(1.702*x), used by the text tower only."""
    xp = namespace(x)
    d = xp.exp(x * -1.702)
    d += 1.0
    if not overwrite:
        return x / d
    x /= d
    return x


def relu(x: Any, overwrite: bool = False) -> Any:
    xp = namespace(x)
    return xp.maximum(x, xp.zeros_like(x))


ACTIVATIONS = {"gelu": gelu, "quick_gelu": quick_gelu, "relu": relu}


def _softmax(x: Any, axis: int, overwrite: bool) -> Any:
    xp = namespace(x)
    top = stop_gradient(xp.max(x, axis=axis, keepdims=True))  # a shift the result does not depend on
    if overwrite:
        x -= top
        e = xp.exp(x)
    else:
        e = xp.exp(x - top)
    e /= xp.sum(e, axis=axis, keepdims=True)
    return e


def softmax(x: Any, axis: int = -1, overwrite: bool = False) -> Any:
    """exp(x - max) / sum: the max subtraction keeps exp finite, including rows with additive -3.4e38 masks.

    `overwrite=True` lets the work happen in x's memory (for scores the caller owns). Over the last axis large
    inputs go in cache-sized blocks of rows.
    """
    if axis in (-1, x.ndim - 1):
        return _map_rows(lambda rows: _softmax(rows, -1, overwrite), x, overwrite)
    return _softmax(x, axis, overwrite)


def linear(x: Any, p: Params) -> Any:
    """y = x W^T + b with W stored (Dout, Din) as in torch.  # [..., Din] -> [..., Dout]

    The leading axes are flattened first: one large 2-D product runs at BLAS speed, while NumPy's stacked
    matmul would loop over the batch with small ones. The bias is added in place to the fresh product. A weight
    stored in half precision is widened here, in its stored (Dout, Din) layout: left to the product, NumPy widens
    the transposed view into a (Din, Dout) copy, BLAS takes another kernel and the sums round differently.
    """
    xp = namespace(x)
    w = xp.astype(p["weight"], x.dtype, copy=False)  # [Dout, Din]; a view when already in the compute dtype
    y = xp.reshape(x, (-1, x.shape[-1])) @ xp.matrix_transpose(w)  # [M, Din] @ [Din, Dout]
    y += p["bias"]
    return xp.reshape(y, (*x.shape[:-1], w.shape[0]))


def _layer_norm(x: Any, p: Params, eps: float) -> Any:
    xp = namespace(x)
    mu = xp.mean(x, axis=-1, keepdims=True)  # [..., 1]
    xc = x - mu  # [..., D], owned: the remaining steps run in place
    var = xp.mean(xc * xc, axis=-1, keepdims=True)  # [..., 1]
    xc /= xp.sqrt(var + eps)
    xc *= p["weight"]
    xc += p["bias"]
    return xc


def layer_norm(x: Any, p: Params, eps: float = 1e-5) -> Any:
    """LayerNorm over the last axis with the biased variance (torch's), in blocks of rows.  # [..., D] -> [..., D]"""
    return _map_rows(lambda rows: _layer_norm(rows, p, eps), x, False)


def batch_norm_eval(x: Any, p: Params, eps: float = 1e-5) -> Any:
    """BatchNorm1d in eval mode: running statistics, not the batch's.  # [..., C] -> [..., C]"""
    xp = namespace(x)
    return (x - p["running_mean"]) / xp.sqrt(p["running_var"] + eps) * p["weight"] + p["bias"]


def mlp(x: Any, p: Params, act: str = "gelu") -> Any:
    """fc2(act(fc1(x))).  # [..., D] -> [..., Dout]"""
    return linear(ACTIVATIONS[act](linear(x, p["fc1"]), overwrite=True), p["fc2"])


def mixer_mlp(x: Any, p: Params) -> Any:
    """The MLP applied along the token axis (MLP-Mixer's token mixing).  # [B, G, D] -> [B, S, D]

    fc1.weight is (hidden, G) and fc2.weight is (S, hidden): the tokens are the features, so the group count can
    change, which is how GroupViT turns 64 group tokens into 8.
    """
    xp = namespace(x)
    return xp.matrix_transpose(mlp(xp.matrix_transpose(x), p))  # [B, D, G] -> [B, D, S] -> [B, S, D]


def l2_normalize(x: Any) -> Any:
    """x / ||x||_2 over the last axis, no epsilon (as HF: a zero vector gives NaN).  # [..., P] -> [..., P]"""
    xp = namespace(x)
    return x / xp.sqrt(xp.sum(x * x, axis=-1, keepdims=True))
