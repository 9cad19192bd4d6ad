"""The original inference's input pipeline on the host (mmseg's test pipeline: Resize keep_ratio to (2048, 448),
Normalize), and its sliding windows.

An image is resized so its short side is 448 (its long side at most 2048) with OpenCV's bilinear rule, normalised
with ImageNet's statistics on the 0-255 scale, and, in `slide` mode, cut into 448x448 windows at stride 224.
Shape legend: H x W the input image, h x w the resized one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..nn.resize import bilinear_taps
from ..preprocessing.image import to_rgb_array

MEAN_255 = (123.675, 116.28, 103.53)  # mmseg's img_norm_cfg: ImageNet mean/std on the 0-255 scale
STD_255 = (58.395, 57.12, 57.375)


def rescale_size(height: int, width: int, short: int = 448, long: int = 2048) -> tuple[int, int]:
    """mmcv's rescale_size: the largest scale with short side <= `short` and long side <= `long`, rounded half up.

    Example: 333 x 517 -> 448 x 696; 17 x 2000 -> 17 x 2048 (the long side limits it).
    """
    scale = min(long / max(height, width), short / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_linear(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv2.INTER_LINEAR (mmcv's default): half-pixel bilinear without antialiasing.  # [H, W, 3] u8 -> [h, w, 3] u8

    Each output pixel blends its four source neighbours, rows first, in float64, rounded half up; OpenCV's 11-bit
    fixed-point weights can differ by one grey level. Only the neighbours are gathered, so memory follows the
    output's size, not the input's (a 12000 x 12000 photo costs no float copy of itself).
    """
    if rgb.shape[:2] == (height, width):
        return rgb
    like = np.zeros(1, dtype=np.float64)
    y0, y1, fy = bilinear_taps(height, rgb.shape[0], like)  # [h] each
    x0, x1, fx = bilinear_taps(width, rgb.shape[1], like)  # [w] each
    y0, y1, x0, x1 = (t.astype(np.intp) for t in (y0, y1, x0, x1))
    fy, fx = fy[:, None, None], fx[None, :, None]

    def rows(cols: np.ndarray) -> np.ndarray:  # [h, w, 3]: the two source rows blended at the given columns
        return (1.0 - fy) * rgb[y0[:, None], cols[None, :]] + fy * rgb[y1[:, None], cols[None, :]]

    out = (1.0 - fx) * rows(x0) + fx * rows(x1)
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def segmentation_pixels(
    image: Any,
    short: int = 448,
    long: int = 2048,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Image -> normalised pixels [1, 3, h, w] float32 (h, w from `rescale_size`) and the input's (H, W).

    `mean` / `std` (0-1 scale, as in a preprocessor config) are the statistics the checkpoint was trained with;
    the default is the original pipeline's ImageNet normalisation.
    """
    rgb = to_rgb_array(image)  # [H, W, 3] uint8
    size = rgb.shape[:2]
    mean_255 = np.asarray(MEAN_255) if mean is None else 255.0 * np.asarray(mean, dtype=np.float64)  # [3]
    std_255 = np.asarray(STD_255) if std is None else 255.0 * np.asarray(std, dtype=np.float64)  # [3]
    x = resize_linear(rgb, *rescale_size(*size, short, long)).astype(np.float64)
    x = (x - mean_255) * (1.0 / std_255)  # mmcv multiplies by the reciprocal
    return np.ascontiguousarray(x.astype(np.float32).transpose(2, 0, 1)[None]), size


def sliding_windows(height: int, width: int, crop: int = 448, stride: int = 224) -> list[tuple[int, int, int, int]]:
    """mmseg's slide_inference windows (y1, y2, x1, x2): a grid at `stride`, the last ones pushed inside the image.

    Example: 448 x 597 -> (0, 448, 0, 448), (0, 448, 149, 597). A side shorter than `crop` gets one full window.
    """
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    out = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + crop, height), min(c * stride + crop, width)
            out.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return out
