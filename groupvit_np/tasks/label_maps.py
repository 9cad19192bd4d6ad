"""Label maps: class scores resized to the input and argmaxed in bounded memory, and `SegmentationResult`, what
both segmentation methods return (label map, class names, probabilities, group maps).

Shape legend: C classes (with background when there is one), h x w the scores' grid, H x W the input image,
S groups, gh x gw the token grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backend import array_device, namespace, to_numpy
from ..nn.resize import bilinear_taps
from .datasets import IGNORE_INDEX


def _taps(out_size: int, in_size: int, like: Any) -> tuple[Any, Any, Any]:
    """`nn.resize.bilinear_taps` computed in float64 (as the maps' resize is specified), indices as integers."""
    xp = namespace(like)
    i0, i1, frac = bilinear_taps(out_size, in_size, xp.zeros((1,), dtype=xp.float64, device=array_device(like)))
    return xp.astype(i0, xp.int64), xp.astype(i1, xp.int64), frac


def _lerp(x: Any, taps: tuple[Any, Any, Any]) -> Any:
    """Resample the first axis from its two taps: (1 - f) * x[i0] + f * x[i1], torch's formula and order."""
    xp = namespace(x)
    i0, i1, f = taps
    f = xp.reshape(xp.astype(f, x.dtype), (-1,) + (1,) * (x.ndim - 1))
    return (1.0 - f) * xp.take(x, i0, axis=0) + f * xp.take(x, i1, axis=0)


def label_dtype(n: int) -> np.dtype:
    """The smallest dtype for label maps of `n` classes beside IGNORE_INDEX (255): uint8 up to 255 classes."""
    return np.dtype(np.uint8 if n <= IGNORE_INDEX else np.int32)


def resize_argmax(logits: Any, height: int, width: int, budget: int = 1 << 24) -> np.ndarray:
    """Bilinear resize to (H, W), then argmax over classes.  # [C, h, w] -> [H, W] uint8 (`label_dtype`), host

    Two taps per output sample (a dense resampling matrix would cost h times more at photo sizes), gathered along
    the leading axis so each copy is a contiguous block, in blocks of output columns holding about `budget`
    values, written straight into the answer: a 60-class map of a 12-megapixel photo fits in memory, and the
    answer takes one byte a pixel. Columns first, then rows, as torch.
    """
    xp = namespace(logits)
    c, h, w = logits.shape
    if (h, w) == (height, width):
        return to_numpy(xp.argmax(logits, axis=0)).astype(label_dtype(c))
    rows, cols = _taps(height, h, logits), _taps(width, w, logits)
    by_column = xp.permute_dims(logits, (2, 0, 1))  # [w, C, h]
    step = max(1, budget // (c * (h + height)))
    out = np.empty((height, width), dtype=label_dtype(c))
    for x0 in range(0, width, step):
        part = _lerp(by_column, tuple(t[x0 : min(x0 + step, width)] for t in cols))  # [b, C, h]
        part = _lerp(xp.permute_dims(part, (2, 0, 1)), rows)  # [h, b, C] -> [H, b, C]
        out[:, x0 : x0 + step] = to_numpy(xp.argmax(part, axis=-1))  # [H, b]
    return out


@dataclass(frozen=True)
class SegmentationResult:
    """A label map over the input image and what produced it. Arrays are host NumPy."""

    labels: np.ndarray  # [H, W] uint8 indices into class_names (`label_dtype`); IGNORE_INDEX (255) where unseen
    class_names: tuple[str, ...]  # background first when `background`
    background: bool
    probabilities: np.ndarray  # [K] image-level softmax over the foreground classes (slide: mean over windows)
    group_maps: tuple[np.ndarray, ...] = ()  # per grouping stage [S, gh, gw] soft maps (empty in slide mode)
    group_scores: np.ndarray | None = None  # [S, K] final groups' class scores (original method, whole mode)
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # (top, left, bottom, right) of the input the maps cover
    method: str = "original"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def foreground(self) -> tuple[str, ...]:
        return self.class_names[1:] if self.background else self.class_names

    def fractions(self) -> dict[str, float]:
        """Share of the image's pixels given to each class present, largest first."""
        n, flat, step = max(256, len(self.class_names)), self.labels.reshape(-1), 1 << 22
        counts = np.zeros(n, dtype=np.int64)
        for start in range(0, flat.size, step):  # bincount widens to int64: a block at a time, not the whole map
            counts += np.bincount(flat[start : start + step], minlength=n)[:n]
        counts, total = counts[: len(self.class_names)], self.labels.size
        order = np.argsort(-counts, kind="stable")
        return {self.class_names[k]: float(counts[k] / total) for k in order if counts[k]}

    def group_labels(self, stage: int = -1, size: tuple[int, int] | None = None) -> np.ndarray:
        """Each pixel's argmax group at a stage, soft maps resized bilinearly first.  # -> [H, W] (or `size`) uint8

        `size` draws the map at another (display) size of the whole input; pixels outside `box` are IGNORE_INDEX.
        """
        if not self.group_maps:
            raise ValueError("no group maps: slide mode runs many windows; segment in whole mode to see groups")
        height, width = size or self.labels.shape
        sy, sx = height / self.labels.shape[0], width / self.labels.shape[1]
        top, left = round(self.box[0] * sy), round(self.box[1] * sx)
        bottom, right = round(self.box[2] * sy), round(self.box[3] * sx)
        inner = resize_argmax(self.group_maps[stage], bottom - top, right - left)
        out = np.full((height, width), IGNORE_INDEX, dtype=inner.dtype)
        out[top:bottom, left:right] = inner
        return out
