"""CLIP's image preprocessing (HF `CLIPImageProcessor`, slow PIL path): files, PIL images, arrays -> pixel_values.

One image `[H, W] -> [3, 224, 224]` float32, bit-identical to transformers 4.57.6: convert to RGB uint8 -> Pillow
bicubic resize of the shortest edge to 224 (long edge truncated) -> centre crop 224 (zero padding if smaller) ->
x * (1/255) in float64, cast to float32 -> (x - mean) / std in float32 -> channels first.

Where HF is wrong we differ on purpose (each case pinned by a test against HF's own correct route):
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

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ..config import write_json_atomic
from .batch import BatchEncoding

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CONFIG_NAME = "preprocessor_config.json"
_ORIENTATION = 0x0112  # the EXIF tag
_METADATA_KEYS = {"image_processor_type", "feature_extractor_type", "processor_class"}


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


def center_crop(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """HF's centre crop: top = (h - height) // 2; a smaller image is first zero-padded, odd pixel on top/left.

    # [h, w, C] -> [height, width, C]
    """
    pad_h, pad_w = max(height - x.shape[0], 0), max(width - x.shape[1], 0)
    x = np.pad(x, (((pad_h + 1) // 2, pad_h // 2), ((pad_w + 1) // 2, pad_w // 2), (0, 0)))
    top, left = (x.shape[0] - height) // 2, (x.shape[1] - width) // 2
    return x[top : top + height, left : left + width]


def _size_dict(size: Any, square: bool) -> dict[str, int]:
    """HF's get_size_dict: an int is a square (crop) or the shortest edge (resize); a pair is (height, width)."""
    if isinstance(size, dict):
        if set(size) not in ({"shortest_edge"}, {"height", "width"}):
            raise ValueError(f"size must have keys 'shortest_edge' or 'height' and 'width', got {sorted(size)}")
        return dict(size)
    if isinstance(size, int):
        return {"height": size, "width": size} if square else {"shortest_edge": size}
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return {"height": size[0], "width": size[1]}
    raise ValueError(f"cannot read image size {size!r}")


@dataclass
class CLIPImageProcessor:
    """HF's `CLIPImageProcessor` (slow, PIL): `__call__(images)` -> BatchEncoding(pixel_values=[B, 3, 224, 224])."""

    do_resize: bool = True
    size: dict[str, int] = field(default_factory=lambda: {"shortest_edge": 224})
    resample: int = 3  # PIL bicubic
    do_center_crop: bool = True
    crop_size: dict[str, int] = field(default_factory=lambda: {"height": 224, "width": 224})
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: list[float] = field(default_factory=lambda: list(CLIP_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(CLIP_STD))
    do_convert_rgb: bool = True

    def __post_init__(self) -> None:
        self.size = _size_dict(self.size, square=False)
        self.crop_size = _size_dict(self.crop_size, square=True)
        self.resample = int(self.resample)
        for key in ("image_mean", "image_std"):  # HF allows one number for all channels
            value = getattr(self, key)
            value = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)] * 3
            if len(value) != 3:
                raise ValueError(f"{key} needs 3 values (R, G, B), got {len(value)}")
            setattr(self, key, value)

    def __call__(self, images: Any, return_tensors: str | None = "np") -> BatchEncoding:
        """One image or a list (or an [B, H, W, C] array) -> pixel_values [B, 3, h, w] float32, or a list if None."""
        batch = isinstance(images, (list, tuple)) or (isinstance(images, np.ndarray) and images.ndim == 4)
        items = list(images) if batch else [images]
        if not items:
            raise ValueError("no images given")
        pixels = [self.process(x, f"images[{i}]" if batch else "image") for i, x in enumerate(items)]
        if return_tensors is None:
            return BatchEncoding(pixel_values=pixels)
        if return_tensors != "np":
            raise ValueError(f"return_tensors must be 'np' or None (groupvit_np is NumPy only), got {return_tensors!r}")
        if len({p.shape for p in pixels}) > 1:
            raise ValueError(f"images of different output sizes {[p.shape for p in pixels]} cannot be stacked")
        return BatchEncoding(pixel_values=np.stack(pixels))

    def process(self, image: Any, name: str = "image") -> np.ndarray:
        """One image through the whole pipeline.  # -> [3, h, w] float32"""
        x = to_rgb_array(image, name, convert=self.do_convert_rgb)  # [H, W, 3] uint8
        if self.do_resize:
            h, w = self.output_size(*x.shape[:2])
            x = np.asarray(Image.fromarray(x).resize((w, h), resample=Image.Resampling(self.resample)))
        if self.do_center_crop:
            x = center_crop(x, self.crop_size["height"], self.crop_size["width"])
        if self.do_rescale:  # float64, then cast, as HF: x * float32(1/255) is 1 ulp off on 126 of 256 levels
            x = (x.astype(np.float64) * self.rescale_factor).astype(np.float32)
        if self.do_normalize:
            x = x if x.dtype.kind == "f" else x.astype(np.float32)
            x = (x - np.asarray(self.image_mean, dtype=x.dtype)) / np.asarray(self.image_std, dtype=x.dtype)
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)  # [H, W, 3] -> [3, H, W]

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after resizing; the long edge is int(s * long / short), truncated as HF does."""
        if "height" in self.size:
            return self.size["height"], self.size["width"]
        s = self.size["shortest_edge"]
        short, long = min(height, width), max(height, width)
        new_long = int(s * long / short)
        return (new_long, s) if width <= height else (s, new_long)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "image_processor_type": type(self).__name__}

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> CLIPImageProcessor:
        """From HF's preprocessor config, 2022 legacy keys included (int `size`/`crop_size`, feature extractor)."""
        config = dict(config)
        if config.pop("use_square_size", False):  # HF's flag for square resizing to the shortest-edge value
            edge = _size_dict(config["size"], square=False)["shortest_edge"]
            config["size"] = {"height": edge, "width": edge}
        unknown = set(config) - set(cls.__dataclass_fields__) - _METADATA_KEYS
        if unknown:  # an option we do not implement would silently change the pixels
            raise ValueError(f"unsupported image processor options: {sorted(unknown)}")
        return cls(**{k: v for k, v in config.items() if k in cls.__dataclass_fields__})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, *, revision: str | None = None
                        ) -> CLIPImageProcessor:  # fmt: skip
        """Read `preprocessor_config.json` from a folder (or that file itself) or a Hub repo id at `revision` (the
        Hugging Face cache first, downloading only with the `hub` extra); None gives CLIP's defaults."""
        if path is None:
            return cls()
        from ..hub import resolve

        found = resolve(path, revision, kind="image_processor")
        file = found / CONFIG_NAME if found.is_dir() else found
        if not file.is_file():
            raise FileNotFoundError(f"no {CONFIG_NAME} in {path}")
        try:
            return cls.from_dict(json.loads(file.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
            raise ValueError(f"{file}: {e}") from None

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write `preprocessor_config.json` (atomically) in HF's layout; returns its path."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(directory) / CONFIG_NAME, self.to_dict())
        return Path(directory) / CONFIG_NAME


IMAGENET_MEAN = (0.485, 0.456, 0.406)  # timm's defaults, which the original's eval transform uses
IMAGENET_STD = (0.229, 0.224, 0.225)


def classification_pixels(image: Any, size: int = 224) -> np.ndarray:
    """The original's eval transform: Resize(256/224*size) bilinear, CenterCrop(size), ImageNet mean/std.

    torchvision semantics: the short side becomes int(256/224*size), the long side int(short' * long / short);
    PIL's bilinear (antialiased) resize; the crop's top is round((h - size) / 2) (half to even).  # -> [1, 3, s, s]
    """
    rgb = to_rgb_array(image)  # [H, W, 3] uint8
    h, w = rgb.shape[:2]
    short = int(256 / 224 * size)
    nh, nw = (int(short * h / w), short) if w <= h else (short, int(short * w / h))
    img = Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BILINEAR)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    x = np.asarray(img, dtype=np.float32)[top : top + size, left : left + size] / np.float32(255)
    x = (x - np.asarray(IMAGENET_MEAN, dtype=np.float32)) / np.asarray(IMAGENET_STD, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])  # [H, W, 3] -> [1, 3, H, W]
