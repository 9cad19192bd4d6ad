"""Images in: a file path, a PIL image or an array -> an upright RGB uint8 array [H, W, 3], as HF's processor sees it.

`load_image` opens and decodes a file now (a truncated one fails here), upright per its EXIF orientation, refusing
more pixels than the caller allows and shrinking a huge one by a whole factor when asked. `to_rgb_array` takes any
of the three. Where HF is wrong we differ on purpose (each case pinned by a test against HF's own correct route):
- 16-bit images (PIL I;16, uint16 arrays) are scaled to 8 bits, round(v / 257); HF's convert("RGB") clips them.
- EXIF orientation is applied to every PIL image; HF applies it only to files it opens from a path.
- Layout is never guessed: images are height x width x channels, so tiny ones (5x3, 1x1), which HF takes for
  channels-first or rejects, give what HF gives with input_data_format="channels_last".
- Float arrays and PIL "F" images are [0, 1] (HF's result with do_rescale=False; its default rescales them twice,
  and it reads whole-valued floats, such as a 0/1 mask, as 0..255).
Alpha is dropped, not composited, as in HF and OpenAI's CLIP. Files over Pillow's decompression-bomb limit are
refused (`ImageTooLarge`); a caller who trusts one can raise `Image.MAX_IMAGE_PIXELS`, open it and pass the PIL
image (the CLI's `--max-pixels` does this).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

_ORIENTATION = 0x0112  # the EXIF tag


class ImageTooLarge(ValueError):
    """An image file with more pixels than the caller allows (a guard against decompression bombs)."""

    def __init__(self, path: Path, pixels: int, limit: int, how: str) -> None:
        super().__init__(f"{path}: {pixels:,} pixels is over the limit of {limit:,} (a guard against decompression "
                         f"bombs); if you trust the file, {how}")  # fmt: skip
        self.path, self.pixels, self.limit = path, pixels, limit


def load_image(
    source: str | os.PathLike | Image.Image, *, max_pixels: int | None = None, reduce_to: int | None = None
) -> Image.Image:
    """Open an image file and decode it now (so a truncated file fails here), upright per its EXIF orientation.

    `max_pixels` refuses a file with more pixels, read from its header before anything is decoded (Pillow's own
    limit, `PIL.Image.MAX_IMAGE_PIXELS`, applies as well). `reduce_to` lets a large image shrink by a whole factor
    while its short side stays at least `reduce_to` pixels: a JPEG is decoded at 1/2, 1/4 or 1/8 scale (`draft`),
    so the full-size pixels never exist; other formats are decoded, then `reduce`d. A shrunk image's
    `info["original_size"]` holds the file's (width, height).
    """
    if isinstance(source, Image.Image):
        return _upright(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"expected an image file path or a PIL image, got {type(source).__name__}")
    if str(source).startswith(("http://", "https://")):
        raise ValueError(f"{source}: groupvit_np never downloads; fetch the file and pass its path")
    path = Path(source)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    try:
        with Image.open(path) as image:
            pixels = image.width * image.height
            if max_pixels is not None and pixels > max_pixels:
                raise ImageTooLarge(path, pixels, max_pixels, f"pass max_pixels={pixels}")
            decoded = _decode(image, reduce_to)
        return _upright(decoded)  # decoded, so the pixels outlive the closed file
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(path, _pixels(e), 2 * (Image.MAX_IMAGE_PIXELS or 0),
                            "raise PIL.Image.MAX_IMAGE_PIXELS and pass it opened") from None  # fmt: skip
    except ImageTooLarge:
        raise
    except (OSError, SyntaxError, ValueError) as e:  # Pillow reports corrupt data with all three
        raise OSError(f"cannot read image file {path}: {e}") from e


def _pixels(err: Exception) -> int:
    """The pixel count in Pillow's DecompressionBombError message ("Image size (N pixels) exceeds ...")."""
    found = re.search(r"\((\d+) pixels\)", str(err))
    return int(found.group(1)) if found else 0


def _decode(image: Image.Image, reduce_to: int | None) -> Image.Image:
    """Decode an opened file, shrunk by a whole factor when `reduce_to` allows (see `load_image`)."""
    size = image.size
    factor = min(size) // reduce_to if reduce_to else 1
    if factor >= 2 and image.format == "JPEG":
        image.draft(None, (-(-size[0] // factor), -(-size[1] // factor)))  # DCT scaling: 1/2, 1/4 or 1/8
    image.load()
    if factor >= 2 and image.format != "JPEG":
        image = image.reduce(factor)
    elif factor >= 2 and min(image.size) // reduce_to >= 2:  # a JPEG past 1/8 scale: reduce the rest
        image = image.reduce(min(image.size) // reduce_to)
    if image.size != size:
        image.info["original_size"] = size
    return image


def _upright(image: Image.Image) -> Image.Image:
    return ImageOps.exif_transpose(image) if image.getexif().get(_ORIENTATION, 1) != 1 else image


def to_rgb_array(image: Any, name: str = "image", convert: bool = True) -> np.ndarray:
    """A path, PIL image or [H, W(, C)] array as RGB uint8 (see the module docstring).  # -> [H, W, 3]"""
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    if isinstance(image, Image.Image):
        image = _upright(image)
        if 0 in image.size:
            raise ValueError(f"{name}: empty image ({image.width}x{image.height})")
        if not convert and image.mode != "RGB":
            raise ValueError(f"{name}: mode {image.mode} is not RGB and do_convert_rgb is False")
        if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
            try:  # palette, gray, 1-bit, CMYK, alpha (dropped): Pillow's own conversion, as HF
                return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
            except ValueError as e:
                raise ValueError(f"{name}: Pillow cannot convert mode {image.mode} to RGB ({e})") from e
        image = np.asarray(image)  # 16-bit, 32-bit and float modes follow the array rules, not convert()'s clip
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name}: expected a file path, a PIL image or a NumPy array, got {type(image).__name__}")
    array = image[:, :, None] if image.ndim == 2 else image
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name}: expected an [H, W] or [H, W, 1|3|4] (channels last) array, got shape {image.shape}")
    if 0 in array.shape:
        raise ValueError(f"{name}: empty image (shape {image.shape})")
    if not convert and array.shape[-1] != 3:
        raise ValueError(f"{name}: {array.shape[-1]} channels, not RGB, and do_convert_rgb is False")
    array = _to_uint8(array, name)
    return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array[..., :3]


def _to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    kind, dtype = array.dtype.kind, array.dtype
    if dtype == np.uint8:
        return array
    if kind == "u" and dtype.itemsize == 2:  # 16 bits: round(v * 255 / 65535) in integers
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if kind not in "uif":  # bool, complex, object, strings...
        raise ValueError(f"{name}: unsupported dtype {dtype}; use uint8, uint16, integers 0..255 or floats in [0, 1]")
    low, high = array.min(), array.max()
    if kind == "f":
        if not (np.isfinite(low) and np.isfinite(high) and 0 <= low and high <= 1):
            raise ValueError(f"{name}: float pixels must lie in [0, 1], got [{low}, {high}] (0..255? use uint8)")
        # HF's to_pil_image: float64 * 255, cast to float32, truncated to uint8 (k / 255 comes back as k)
        return (array.astype(np.float64) * 255).astype(np.float32).astype(np.uint8)
    if low < 0 or high > 255:
        raise ValueError(f"{name}: integer pixels must lie in 0..255, got {low}..{high} ({dtype}; 16-bit? use uint16)")
    return array.astype(np.uint8)
