"""Resampling as small weight matrices, so it runs on any Array API backend: bilinear for group maps, bicubic
for the position table. Both follow torch's `F.interpolate(..., align_corners=False)` exactly.
"""

from __future__ import annotations

from typing import Any

from ..backend import array_device, namespace


def _source_coords(out_size: int, in_size: int, like: Any) -> Any:
    """torch's align_corners=False source coordinate (dst + 0.5) * in/out - 0.5.  # -> [out]"""
    xp = namespace(like)
    dst = xp.astype(xp.arange(out_size, device=array_device(like)), like.dtype)
    return (dst + 0.5) * (in_size / out_size) - 0.5


def _taps_matrix(index: Any, weight: Any, in_size: int) -> Any:
    """Scatter weights onto columns: M[o, index[o]] = weight[o] (several calls are summed).  # [out] -> [out, in]"""
    xp = namespace(weight)
    cols = xp.astype(xp.arange(in_size, device=array_device(weight)), weight.dtype)[None, :]  # [1, in]
    return xp.astype(cols == index[:, None], weight.dtype) * weight[:, None]


def bilinear_taps(out_size: int, in_size: int, like: Any) -> tuple[Any, Any, Any]:
    """torch's bilinear taps (align_corners=False): first and second source index and the second's weight.  # [out]

    The source coordinate (dst + 0.5) * in/out - 0.5 is clamped at 0; the taps are floor(src) and the next one,
    clamped to the edge. Indices come back as floats in `like`'s dtype.
    """
    xp = namespace(like)
    src = _source_coords(out_size, in_size, like)
    src = xp.maximum(src, xp.zeros_like(src))
    i0 = xp.floor(src)  # [out]
    i1 = xp.minimum(i0 + 1.0, xp.full_like(i0, in_size - 1))
    return i0, i1, src - i0


def bilinear_matrix(out_size: int, in_size: int, like: Any) -> Any:
    """Weights of 1-D bilinear resampling (torch, align_corners=False), from `bilinear_taps`.  # -> [out, in]

    Example: 2 -> 4 gives rows [1, 0], [.75, .25], [.25, .75], [0, 1].
    """
    i0, i1, frac = bilinear_taps(out_size, in_size, like)
    return _taps_matrix(i0, 1.0 - frac, in_size) + _taps_matrix(i1, frac, in_size)


def _cubic_near(x: Any, a: float) -> Any:  # |x| <= 1
    return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0


def _cubic_far(x: Any, a: float) -> Any:  # 1 < |x| < 2
    return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a


def bicubic_matrix(out_size: int, in_size: int, like: Any, a: float = -0.75) -> Any:
    """Weights of 1-D bicubic resampling (torch, align_corners=False, Keys kernel with A = -0.75).  # -> [out, in]

    Unlike bilinear, the source coordinate is not clamped; the four taps floor(src)-1 .. floor(src)+2 are clamped
    to [0, in-1], so weights that fall off the edge pile onto the border sample. out == in gives the identity.
    """
    xp = namespace(like)
    src = _source_coords(out_size, in_size, like)
    i0 = xp.floor(src)  # [out]
    t = src - i0  # [out], in [0, 1)
    weights = (_cubic_far(t + 1.0, a), _cubic_near(t, a), _cubic_near(1.0 - t, a), _cubic_far(2.0 - t, a))
    m = None
    for k, w in zip((-1.0, 0.0, 1.0, 2.0), weights, strict=True):
        idx = xp.clip(i0 + k, 0.0, float(in_size - 1))
        m = _taps_matrix(idx, w, in_size) if m is None else m + _taps_matrix(idx, w, in_size)
    return m


def resize_grid(grid: Any, out_h: int, out_w: int, kind: str = "bilinear") -> Any:
    """Separable 2-D resampling of the last two axes.  # [..., h, w] -> [..., out_h, out_w]"""
    xp = namespace(grid)
    make = bilinear_matrix if kind == "bilinear" else bicubic_matrix
    rows = make(out_h, grid.shape[-2], grid)  # [out_h, h]
    cols = make(out_w, grid.shape[-1], grid)  # [out_w, w]
    return rows @ grid @ xp.matrix_transpose(cols)  # [out_h, h] @ [..., h, w] @ [w, out_w]


def resize_position_table(table: Any, grid_h: int, grid_w: int) -> Any:
    """Resize a square learned position table to a new token grid, bicubically.  # [1, g*g, D] -> [1, gh*gw, D]

    As HF's `interpolate_pos_encoding`: the table is returned unchanged at its native grid.
    """
    xp = namespace(table)
    _, n, d = table.shape
    g = round(n**0.5)
    if (grid_h, grid_w) == (g, g):
        return table
    square = xp.permute_dims(xp.reshape(table, (g, g, d)), (2, 0, 1))  # [D, g, g]
    resized = resize_grid(square, grid_h, grid_w, "bicubic")  # [D, gh, gw]
    return xp.reshape(xp.permute_dims(resized, (1, 2, 0)), (1, grid_h * grid_w, d))
